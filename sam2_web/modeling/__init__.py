"""Pure ``nn.Module`` building blocks of SAM 2.

Module paths mirror the official ones (``sam2.modeling.X`` -> ``sam2_web.modeling.X``) so the
hydra configs only swap the package prefix, and parameter names equal the checkpoint keys so
official weights load with ``strict=True``. Nothing in here does I/O.
"""
