"""The code interpreter (contract section a6): code contexts backed by Jupyter kernels (Python)
and a Node REPL (JavaScript, TypeScript), their runs streamed as they happen (section b3)."""

from .service import InterpreterService, InterpreterSettings

__all__ = ["InterpreterService", "InterpreterSettings"]
