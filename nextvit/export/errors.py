"""The export library's one error type, and the exit codes the deployment scripts share.

A library error names the parameter it is about (`param`, e.g. "num_classes") rather than a
command-line flag; `nextvit.export.cli` turns that name into the flag of the script that was run.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["EXIT_OK", "EXIT_CHECK_FAILED", "EXIT_USAGE", "EXIT_UNAVAILABLE", "ExportError"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # the exported model does not match PyTorch
EXIT_USAGE = 2  # a bad argument or input file
EXIT_UNAVAILABLE = 3  # the toolchain is missing here (TensorRT, a GPU, coremltools)

_UNSET = object()


class ExportError(RuntimeError):
    """An export could not be done or did not check out.

    `exit_code` says which (the constants above); `param` and `value` name the argument at fault,
    when one is, so that a command line can report it under its own flag name.
    """

    def __init__(
        self, message: str, exit_code: int = EXIT_CHECK_FAILED, *, param: str | None = None, value: object = _UNSET
    ) -> None:
        self.message, self.exit_code, self.param, self.value = message, exit_code, param, value
        super().__init__(self.describe())

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        """The message, prefixed by the argument at fault under `names[param]` (e.g. a flag) if given."""
        if self.param is None:
            return self.message
        name = (names or {}).get(self.param, self.param)
        if self.value is _UNSET:
            return f"{name}: {self.message}"
        if name.startswith("-"):
            shown = " ".join(map(str, self.value)) if isinstance(self.value, (list, tuple)) else str(self.value)
            return f"{name} {shown}: {self.message}"
        return f"{name}={self.value!r}: {self.message}"
