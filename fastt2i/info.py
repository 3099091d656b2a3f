"""``python -m fastt2i.info``: what this installation can run, and why not."""
from __future__ import annotations

import platform

import torch


def report() -> str:
    from fastt2i import __version__, ops
    from fastt2i.ops import _backend

    lines = [
        f"fastt2i {__version__}  python {platform.python_version()}  torch {torch.__version__}"
        f" (CUDA {torch.version.cuda or 'none'})",
    ]
    try:
        import triton

        lines.append(f"triton {triton.__version__}  TRITON_INTERPRET={int(_backend.triton_interpret())}")
    except ImportError:
        lines.append("triton: not installed")
    ext = _backend.extension()
    lines.append(f"extension fastt2i._C: {ext.build_info() if ext else 'not built (' + str(_backend._ext_error) + ')'}")
    lines.append(cpu_level_line(ext))
    if torch.cuda.is_available():
        lines.append(f"device: {torch.cuda.get_device_name()}")
    lines.append(f"selected backend: {ops.get_backend()}")
    for name in ops.BACKENDS:
        status = "available" if name in ops.available_backends() else "unavailable: " + _backend._why_unavailable(name)
        lines.append(f"  {name:<10} {status}")
    if ext is None:
        lines.append("To build the compiled backends: pip install --no-build-isolation -e .  (or `make install`)")
    return "\n".join(lines)


def cpu_level_line(ext) -> str:
    """The instruction-set level of ATen and of fastt2i's CPU kernels (ATEN_CPU_CAPABILITY forces both)."""
    aten = torch.backends.cpu.get_cpu_capability()
    if ext is None or not hasattr(ext, "cpu_capability"):
        return f"CPU level: ATen {aten}; fastt2i CPU kernels: not built"
    return (f"CPU kernels: {ext.cpu_capability()} (built: {ext.cpu_levels_built()}; ATen {aten}; "
            "ATEN_CPU_CAPABILITY=default|avx2|avx512 forces a level)")


if __name__ == "__main__":
    print(report())
