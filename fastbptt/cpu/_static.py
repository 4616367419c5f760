"""Compile-time dispatch that compiles nothing of its own.

The CPU kernels choose code from argument types when they compile: the cell from its tag's
type, the input kind and the loss from which arguments are None, :func:`~fastbptt.cpu.blas.gemm`'s
layout from the arrays'. :func:`static_dispatch` makes each compiled call of a plain Python
*stub* a direct call of the chosen ``@njit`` kernel.

Why not ``numba.extending.overload``: an overload compiles its implementation as a function
of its own for every signature, inlined or not, and Numba links the code of every function a
compiled function calls into that function's module, then optimises and emits the whole
module again. A wrapper per choice therefore re-optimised and re-emitted its kernel's code,
and the first call in a fresh process compiled eleven such wrappers. A call lowered straight
to the kernel compiles only the kernel (measured in ``docs/performance.rst``, "First calls").
"""
from __future__ import annotations

import inspect

from numba import types
from numba.core.imputils import lower_builtin
from numba.core.typing.templates import Signature
from numba.extending import type_callable


def static_dispatch(stub, choose):
    """Lower every compiled call of the Python function ``stub`` to a call of a kernel.

    Parameters
    ----------
    stub : function
        A plain Python function (its docstring documents the call; its body is not used
        in compiled code).
    choose : callable
        ``choose(*argtypes)`` -> ``(kernel, picks, cast)`` or None (no kernel: a typing
        error at the call). ``kernel`` is an ``@njit`` dispatcher, ``picks`` the indices of
        the stub's arguments it takes, in its order, and ``cast`` None or a tuple of the
        types the stub's arguments are converted to first (e.g. arrays to layout ``'A'``,
        so that one compiled kernel serves every layout). ``choose`` must give the same
        answer for the converted types.
    """
    @type_callable(stub)
    def _type(context):
        def typer(*args):
            ch = choose(*args)
            if ch is None:
                return None
            kernel, picks, cast = ch
            want = tuple(args) if cast is None else tuple(cast)
            fnty = context.resolve_value_type(kernel)
            ksig = context.resolve_function_type(fnty, tuple(want[i] for i in picks), {})
            if ksig is None:
                return None
            return Signature(ksig.return_type, want, None)
        typer.pysig = inspect.signature(stub)    # the stub's parameters, not a *args tuple
        return typer

    @lower_builtin(stub, types.VarArg(types.Any))
    def _lower(context, builder, sig, args):
        kernel, picks, _ = choose(*sig.args)
        tys = tuple(sig.args[i] for i in picks)
        fnty = context.typing_context.resolve_value_type(kernel)
        ksig = context.typing_context.resolve_function_type(fnty, tys, {})
        return context.get_function(fnty, ksig)(builder, [args[i] for i in picks])

    return stub
