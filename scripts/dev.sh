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
  report_missing
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

# Oracle and host sources that no registry has come as snapshots (tarballs): from the team's read-only
# shared/ folder ($SAM2_WEB_SHARED, else shared/ in the checkout, else the one beside it, as CI has it),
# else from their public source at the pinned commit (GitHub), repacked with the snapshot's top folder and
# kept in .oracles/downloads. A clone with neither gets them marked missing: see missing() below.
snapshot() {  # FILE URL TOP: print the path of a tarball laid out as shared/FILE (top folder TOP), or nothing
  local file=$1 url=$2 top=$3 d tmp
  for d in "${SAM2_WEB_SHARED:-}" shared ../shared; do
    if [ -n "$d" ] && [ -f "$d/$file" ]; then echo "$(cd "$d" && pwd)/$file"; return; fi
  done
  local cached=.oracles/downloads/${file##*/}
  if [ ! -f "$cached" ] && command -v curl >/dev/null; then
    mkdir -p .oracles/downloads
    tmp=$(mktemp -d)
    if curl -fsSL --connect-timeout 20 --max-time 900 "$url" -o "$tmp/src.tar.gz" 2>/dev/null \
        && mkdir "$tmp/$top" && tar -xzf "$tmp/src.tar.gz" -C "$tmp/$top" --strip-components=1 \
        && tar -czf "$cached.part" -C "$tmp" "$top"; then
      mv "$cached.part" "$cached"
    fi
    rm -rf "$tmp" "$cached.part"
  fi
  if [ -f "$cached" ]; then echo "$(pwd)/$cached"; fi
}

# What could not be installed: one line per oracle/host in .oracles/missing/NAME, which the tests that
# need it read as their skip reason (tests/oracle_venv.py require_installed); a finished install of NAME
# leaves .oracles/NAME/.ready instead.
MISSING=()
missing() {  # NAME WHY
  mkdir -p .oracles/missing
  echo "$2" > ".oracles/missing/$1"
  MISSING+=("$1")
}
installed() {  # NAME: mark NAME ready
  rm -f ".oracles/missing/$1"
  touch ".oracles/$1/.ready"
}
report_missing() {
  [ ${#MISSING[@]} -eq 0 ] && return 0
  local line="" name
  for name in "${MISSING[@]}"; do line+="${line:+; }$name: $(cat ".oracles/missing/$name")"; done
  echo "dev.sh: not installed — $line. Tests that need them skip with this reason (with CI=true they fail)." >&2
  if [ "${CI:-}" = "true" ]; then echo "dev.sh: CI=true: every oracle and host must be installed" >&2; return 1; fi
}

install_oracles() {
  mkdir -p .oracles
  # Each family: its venv (oracle_venv NAME), the authors' package installed with --no-deps unless it
  # is there already, then `installed NAME` (or `missing NAME WHY` when its source cannot be had).
  # EdgeTAM (facebookresearch/EdgeTAM packaged as edgetam-dimos; its package is also `sam2`). Its
  # other needs (torch, timm, hydra, iopath, tqdm, pillow) come from the dev venv.
  oracle_venv edgetam
  if ! .oracles/edgetam/bin/python -c "import importlib.metadata as m; m.version('edgetam-dimos')" 2>/dev/null; then
    .oracles/edgetam/bin/python -m pip install -q --disable-pip-version-check --no-deps "edgetam-dimos==1.0.1"
  fi
  installed edgetam
  # EfficientTAM (yformer/EfficientTAM at abcd061; package efficient_track_anything) from its source
  # snapshot. Editable, from the unpacked tree kept in .oracles/src: the repo has no MANIFEST.in, so a
  # plain install leaves out the YAML configs hydra needs.
  local etam_tar=efficienttam-abcd061.tar.gz etam_src=.oracles/src/EfficientTAM tarball
  if [ "$(cat "$etam_src/.snapshot" 2>/dev/null)" != "$etam_tar" ] \
      || ! .oracles/efficienttam/bin/python -c "import importlib.metadata as m; m.version('efficient_track_anything')" 2>/dev/null; then
    tarball=$(snapshot "oracles/$etam_tar" https://github.com/yformer/EfficientTAM/archive/abcd061.tar.gz EfficientTAM)
    if [ -z "$tarball" ]; then
      missing efficienttam "no shared/oracles/$etam_tar and github.com/yformer/EfficientTAM unreachable: the EfficientTAM parity tests skip"
    else
      oracle_venv efficienttam
      rm -rf "$etam_src" && mkdir -p .oracles/src
      tar -xzf "$tarball" -C .oracles/src
      echo "$etam_tar" > "$etam_src/.snapshot"
      # Building it in place needs bdist_wheel, which the venv's own (older) setuptools lacks.
      .oracles/efficienttam/bin/python -c "import wheel" 2>/dev/null \
        || .oracles/efficienttam/bin/python -m pip install -q --disable-pip-version-check wheel
      Efficient_Track_Anything_BUILD_CUDA=0 .oracles/efficienttam/bin/python -m pip install -q \
        --disable-pip-version-check --no-build-isolation --no-deps -e "$etam_src"
      installed efficienttam
    fi
  else
    installed efficienttam
  fi
  # SAMURAI (yangchris11/samurai at 76ba195): its sam2/ folder is a fork of Meta's sam2 (package `sam2`
  # again) with a Kalman filter and configs/samurai/*.yaml. Installed NOT editable (an editable `sam2`
  # loses to the reference's `sam2` reached through the dev venv's .pth) from the unpacked snapshot; both
  # the shared tarball and the repacked GitHub archive hold it under samurai-76ba195/sam2. Its package
  # data carries the YAMLs. Beside the dev venv it needs scipy (the filter) and loguru (its logging).
  local sam_tar=samurai-76ba195.tar.gz sam_src=.oracles/src/samurai-76ba195
  if [ "$(cat .oracles/samurai/.snapshot 2>/dev/null)" != "$sam_tar" ] \
      || ! .oracles/samurai/bin/python -c "import sam2.utils.kalman_filter" 2>/dev/null; then
    tarball=$(snapshot "oracles/$sam_tar" https://github.com/yangchris11/samurai/archive/76ba195.tar.gz samurai-76ba195)
    if [ -z "$tarball" ]; then
      missing samurai "no shared/oracles/$sam_tar and github.com/yangchris11/samurai unreachable: the SAMURAI parity tests skip"
    else
      oracle_venv samurai
      rm -rf "$sam_src" && mkdir -p .oracles/src
      tar -xzf "$tarball" -C .oracles/src
      if [ ! -f "$sam_src/sam2/setup.py" ]; then
        missing samurai "$tarball has no samurai-76ba195/sam2/setup.py: the SAMURAI parity tests skip"
      else
        local spip=(.oracles/samurai/bin/python -m pip install -q --disable-pip-version-check)
        "${spip[@]}" setuptools wheel scipy loguru
        SAM2_BUILD_CUDA=0 "${spip[@]}" --no-build-isolation --no-deps "./$sam_src/sam2"
        echo "$sam_tar" > .oracles/samurai/.snapshot
        installed samurai
      fi
      rm -rf "$sam_src"
    fi
  else
    installed samurai
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
  installed blender5
  # ComfyUI 0.3.64 from its snapshot (tests unpack a fresh tree each run; .oracles/comfyui/.snapshot
  # names the tarball): its requirements.txt without torch/torchvision/torchaudio (the dev venv's torch
  # serves it; the audio nodes it cannot load are skipped by ComfyUI), plus requests, which it imports
  # but omits.
  local comfy_tar reqs
  comfy_tar=$(snapshot hosts/comfyui-0.3.64.tar.gz \
    https://github.com/comfyanonymous/ComfyUI/archive/refs/tags/v0.3.64.tar.gz ComfyUI)
  if [ -z "$comfy_tar" ]; then
    missing comfyui "no shared/hosts/comfyui-0.3.64.tar.gz and github.com/comfyanonymous/ComfyUI unreachable: the real-ComfyUI host test skips"
    return 0
  fi
  oracle_venv comfyui
  reqs=$(tar -xzOf "$comfy_tar" ComfyUI/requirements.txt | grep -vE '^(torch|torchvision|torchaudio)[[:space:]]*$')
  reqs+=$'\nrequests'
  if [ "$(cat .oracles/comfyui/.requirements 2>/dev/null)" != "$reqs" ]; then
    .oracles/comfyui/bin/python -m pip install -q --disable-pip-version-check -c constraints-ci.txt \
      -r <(printf '%s\n' "$reqs")
    printf '%s' "$reqs" > .oracles/comfyui/.requirements
  fi
  echo "$comfy_tar" > .oracles/comfyui/.snapshot
  installed comfyui
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
