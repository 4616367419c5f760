"""The Numba CPU backend.

Files by concern: :mod:`~fastbptt.cpu.blas` (BLAS ``?gemm`` from compiled code and its thread
policy), :mod:`~fastbptt.cpu.activations` (each activation written once),
:mod:`~fastbptt.cpu.rnn`, :mod:`~fastbptt.cpu.lstm`, :mod:`~fastbptt.cpu.gru` (each cell's
pointwise kernels), :mod:`~fastbptt.cpu.steps` (the cell-agnostic time loops and weight
gradients), :mod:`~fastbptt.cpu.heads` (softmax/cross-entropy/MSE, id gathers),
:mod:`~fastbptt.cpu.fused` (full BPTT in one compiled call) with
:mod:`~fastbptt.cpu.workspace` (its workspace, kept per thread between calls),
:mod:`~fastbptt.cpu.ops` (:class:`CpuOps`, what the engine schedules),
:mod:`~fastbptt.cpu.layer` (the layer API), :mod:`~fastbptt.cpu.parallel` (a call's batch
rows across the cores) and :mod:`~fastbptt.cpu.optim` (``fastbptt train``'s Adam step).

Kernels are module-level ``@njit(cache=True, nogil=True)`` functions over caller-owned
arrays: nothing is compiled at import, compiled code is cached on disk, and the cell and the
Elman activation are small integers, so one compiled kernel serves every cell.
"""
from .activations import tanh_f32, tanh_f32_array
from .blas import gemm, gemm_scratch, register_blas, restore_threads
from .fused import fused_eligible, fused_full_bptt, fused_loss_and_grad
from .heads import gather_rows_bias, mse_rows, scatter_add_rows, softmax_xent_ids, softmax_xent_probs
from .ops import CpuOps
from .steps import backward_steps, cell_tag, forward_steps

__all__ = ["CpuOps", "fused_eligible", "fused_full_bptt", "fused_loss_and_grad", "gemm",
           "gemm_scratch", "register_blas", "restore_threads", "gather_rows_bias",
           "scatter_add_rows", "softmax_xent_ids", "softmax_xent_probs", "mse_rows",
           "forward_steps", "backward_steps", "cell_tag", "tanh_f32", "tanh_f32_array"]
