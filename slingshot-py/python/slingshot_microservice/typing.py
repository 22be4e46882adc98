"""The original package's type names, unchanged: ``CaseVariable``, ``ReadFileFn``, ``WriteFileFn``, ``WriteHandle``, ``ProcessFn``."""

from slingshot.typing import CaseVariable, ProcessFn, ReadFileFn, WriteFileFn, WriteHandle

__all__ = ["CaseVariable", "ReadFileFn", "WriteFileFn", "WriteHandle", "ProcessFn"]
