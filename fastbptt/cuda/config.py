"""Tunables of the CUDA backend (:mod:`fastbptt.cuda`).

Read each time a kernel is launched, so tests (and users) can patch them, e.g. make blocks tiny
under the CUDA simulator so a few elements already span several blocks. Kernels whose shared
memory size depends on a value here are compiled once per distinct value.
"""

# Threads per block of the 1-D kernels (per-step recurrence, elementwise work, scatters) and
# of the one-block-per-row softmax/loss kernel. A power of two (tree reductions).
THREADS = 256

# Side of the square shared-memory tiles of the matrix product and of the column-sum
# reduction: blocks of TILE x TILE threads. 16 -> 256 threads, two 16x17 tiles per block.
TILE = 16

# Time-loop kernels:
#   "per-step"    one launch per step, many blocks (any size);
#   "persistent"  one block keeps W in shared memory and runs the whole loop in one launch;
#   "cooperative" a cooperative grid of blocks, each keeping a slice of W's columns in shared
#                 memory, with a grid-wide sync per step (for W too large for one block);
#                 compiled to PTX and simulated with one block, never run on a GPU: opt-in;
#   "auto"        "persistent" when W fits in PERSISTENT_MAX_SMEM bytes and B*H is at most
#                 PERSISTENT_MAX_BH (one block is then not the bottleneck), else "per-step".
RECURRENT = "auto"
PERSISTENT_MAX_SMEM = 48 * 1024      # the default dynamic shared-memory limit per block
PERSISTENT_MAX_BH = 16 * 1024
PERSISTENT_THREADS = 256             # threads per block of the persistent/cooperative kernels
