#!/usr/bin/env bash
# Developer set-up and test runner.
#   bash scripts/dev.sh test      install system tools + dev extras + the reference, then run the tests
#   bash scripts/dev.sh install   the install step alone
#   bash scripts/dev.sh pytest …  run pytest inside the dev environment with your arguments
# The environment lives in .venv (override with SAM2_WEB_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SAM2_WEB_VENV:-.venv}
PY=${PYTHON:-python3}

system_tools() {
  # ffmpeg decodes/encodes clips; chromium + chromedriver drive the browser test.
  local need=()
  command -v ffmpeg >/dev/null || need+=(ffmpeg)
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "missing system tools: ${need[*]} (install them with apt-get)" >&2; exit 1
    fi
  fi
}

install() {
  system_tools
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  # torch first (pinned for CI's CPU machines), then ours with the dev extras.
  "${pip[@]}" -c constraints-ci.txt torch torchvision
  "${pip[@]}" -c constraints-ci.txt -e ".[dev]"
  # The reference implementation (a test oracle only): its build needs torch already installed
  # and no CUDA extension on these machines.
  if ! "$VENV/bin/python" -c "import sam2" 2>/dev/null; then
    SAM2_BUILD_CUDA=0 "${pip[@]}" -c constraints-ci.txt --no-build-isolation "sam2==1.1.0"
  fi
  install_oracles
  install_hosts
}

# Oracles whose package clashes with the reference (several call themselves `sam2`) live in their own
# venvs under .oracles/NAME. Each sees the dev venv's site-packages *after* its own (a .pth file), so
# torch, timm and hydra are shared (no second multi-GB torch) while its own `sam2` shadows the reference.
# Tests drive them in a subprocess (tests/oracle_venv.py).
oracle_venv() {
  local name=$1 dir=.oracles/$1
  if [ ! -x "$dir/bin/python" ]; then "$PY" -m venv "$dir"; fi
  local own shared
  own=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  shared=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$(cd "$shared" && pwd)" > "$own/_sam2_web_dev_venv.pth"
}

# The team's read-only shared/ folder: $SAM2_WEB_SHARED, else shared/ in the checkout, else the one
# beside it (CI clones the repository with a copy of shared/ next to it).
shared_dir() {
  local d
  for d in "${SAM2_WEB_SHARED:-}" shared ../shared; do
    if [ -n "$d" ] && [ -d "$d/oracles" ]; then (cd "$d" && pwd); return; fi
  done
  echo "no shared/ folder with oracles/ (set SAM2_WEB_SHARED)" >&2; return 1
}

install_oracles() {
  mkdir -p .oracles
  # (each oracle family adds its block here: create its venv with oracle_venv NAME, then install
  #  the authors' package into it with --no-deps, after checking whether it is already there)
  :
  # EdgeTAM (facebookresearch/EdgeTAM packaged as edgetam-dimos; its package is also `sam2`). Its
  # other needs (torch, timm, hydra, iopath, tqdm, pillow) come from the dev venv.
  oracle_venv edgetam
  if ! .oracles/edgetam/bin/python -c "import importlib.metadata as m; m.version('edgetam-dimos')" 2>/dev/null; then
    .oracles/edgetam/bin/python -m pip install -q --disable-pip-version-check --no-deps "edgetam-dimos==1.0.1"
  fi
  # EfficientTAM (yformer/EfficientTAM at abcd061; package efficient_track_anything) from the source
  # snapshot in shared/oracles/. Editable, from the unpacked tree kept in .oracles/src: the repo has no
  # MANIFEST.in, so a plain install leaves out the YAML configs hydra needs.
  oracle_venv efficienttam
  local etam_tar=efficienttam-abcd061.tar.gz etam_src=.oracles/src/EfficientTAM
  if [ "$(cat "$etam_src/.snapshot" 2>/dev/null)" != "$etam_tar" ] \
      || ! .oracles/efficienttam/bin/python -c "import importlib.metadata as m; m.version('efficient_track_anything')" 2>/dev/null; then
    rm -rf "$etam_src" && mkdir -p .oracles/src
    tar -xzf "$(shared_dir)/oracles/$etam_tar" -C .oracles/src
    echo "$etam_tar" > "$etam_src/.snapshot"
    # Building it in place needs bdist_wheel, which the venv's own (older) setuptools lacks.
    .oracles/efficienttam/bin/python -c "import wheel" 2>/dev/null \
      || .oracles/efficienttam/bin/python -m pip install -q --disable-pip-version-check wheel
    Efficient_Track_Anything_BUILD_CUDA=0 .oracles/efficienttam/bin/python -m pip install -q \
      --disable-pip-version-check --no-build-isolation --no-deps -e "$etam_src"
  fi
}

# Editor hosts the plugin tests run inside (issue 10), each in a venv made by oracle_venv, so torch and
# the rest of the dev venv are shared. Skipped quickly when already installed.
install_hosts() {
  mkdir -p .oracles
  local pip
  # Blender 5: the bpy 5.0.1 module needs numpy<2; its venv takes numpy<2 first (a dev venv numpy
  # that satisfies it is used as is, a newer one is shadowed), then bpy, which shadows the dev venv's 4.5.
  oracle_venv blender5
  pip=(.oracles/blender5/bin/python -m pip install -q --disable-pip-version-check)
  if ! .oracles/blender5/bin/python -c "import importlib.metadata as m; assert m.version('bpy') == '5.0.1'" 2>/dev/null; then
    "${pip[@]}" "numpy<2"
    "${pip[@]}" "bpy==5.0.1"
  fi
  # ComfyUI 0.3.64 from the snapshot in shared/hosts/ (tests unpack a fresh tree each run): its
  # requirements.txt without torch/torchvision/torchaudio (the dev venv's torch serves it; the
  # audio nodes it cannot load are skipped by ComfyUI), plus requests, which it imports but omits.
  oracle_venv comfyui
  local comfy_tar="" reqs d
  for d in "${SAM2_WEB_SHARED:-}" shared ../shared; do  # as tests/test_host_comfyui.py looks
    if [ -n "$d" ] && [ -f "$d/hosts/comfyui-0.3.64.tar.gz" ]; then comfy_tar=$d/hosts/comfyui-0.3.64.tar.gz; break; fi
  done
  [ -n "$comfy_tar" ] || { echo "no shared/hosts/comfyui-0.3.64.tar.gz (set SAM2_WEB_SHARED)" >&2; return 1; }
  reqs=$(tar -xzOf "$comfy_tar" ComfyUI/requirements.txt | grep -vE '^(torch|torchvision|torchaudio)[[:space:]]*$')
  reqs+=$'\nrequests'
  if [ "$(cat .oracles/comfyui/.requirements 2>/dev/null)" != "$reqs" ]; then
    .oracles/comfyui/bin/python -m pip install -q --disable-pip-version-check -c constraints-ci.txt \
      -r <(printf '%s\n' "$reqs")
    printf '%s' "$reqs" > .oracles/comfyui/.requirements
  fi
}

case "${1:-test}" in
  install) install ;;
  test)
    install
    shift || true
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    exit $rc ;;
  pytest) shift; exec "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: scripts/dev.sh [install|test|pytest ARGS…]" >&2; exit 2 ;;
esac
