"""Measured machine limits for the packed kernel's popcount bound: core clock and VPOPCNTQ throughput.

The XNOR-popcount layer's lower bound counts 64-bit words to popcount and divides by what the core
can do per second.  Two numbers are needed, both measured here rather than assumed:

- the *running* core clock: a chain of dependent 1-cycle integer adds (``add $1, reg``) timed with
  ``perf_counter``.  Under a hypervisor the nominal/TSC frequency (what ``/proc/cpuinfo`` calls "MHz"
  or BogoMIPS / 2) can be far below the boost clock the core actually runs at;
- the throughput of the kernel's inner operation on 512-bit vectors held in registers: ``vpopcntq``
  alone (the bound's "one VPOPCNTQ zmm per cycle") and ``vpxorq + vpopcntq + vpaddq`` (what one
  64x8-bit XNOR-popcount step costs; on AMD Zen 4 the three share the vector pipes, so the step is
  slower than the popcount alone: the attainable peak of any kernel of this form).

The loops are inline assembly compiled by numba (no compiler needed); the AVX-512 ones run only
where ``/proc/cpuinfo`` lists ``avx512_vpopcntdq``.
"""

from __future__ import annotations

import platform
import time

from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

llvm.initialize_native_asmparser()  # inline asm needs the target's assembler parser (numba skips it)

_I64 = ir.IntType(64)
#: dependent adds per inline-asm block (one cycle each)
CHAIN = 32
#: independent 512-bit operations per inline-asm block
VECTORS = 8


@intrinsic
def _add_chain(typingctx, x):
    """``CHAIN`` dependent ``add $1`` on one register: ``CHAIN`` cycles."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        fty = ir.FunctionType(_I64, [_I64])
        return builder.asm(fty, "add $$1, $0\n" * CHAIN, "=r,0", [args[0]], side_effect=True)

    return sig, codegen


def _vector_asm(xor: bool, add: bool) -> str:
    lines = []
    for i in range(VECTORS):
        src = f"%zmm{i}"
        if xor:
            lines.append(f"vpxorq %zmm{i}, %zmm8, %zmm{16 + i}")
            src = f"%zmm{16 + i}"
        lines.append(f"vpopcntq {src}, %zmm{16 + i}")
        if add:
            lines.append(f"vpaddq %zmm{16 + i}, %zmm{24 + i}, %zmm{24 + i}")
    return "\n".join(lines)


def _make_vector_block(xor: bool, add: bool):
    text = _vector_asm(xor, add)
    clobbers = ",".join(f"~{{zmm{r}}}" for r in range(16, 32))

    @intrinsic
    def block(typingctx, x):
        sig = types.int64(types.int64)

        def codegen(context, builder, signature, args):
            fty = ir.FunctionType(ir.VoidType(), [])
            builder.asm(fty, text, clobbers, [], side_effect=True)
            return args[0]

        return sig, codegen

    return block


_popcnt_block = _make_vector_block(False, False)
_xor_popcnt_add_block = _make_vector_block(True, True)


@njit
def _run_chain(n):
    x = 0
    for _ in range(n):
        x = _add_chain(x)
    return x


def _make_runner(block):
    """A jitted loop calling ``block(i)`` ``n`` times (one per vector-block intrinsic)."""

    @njit
    def run(n):
        x = 0
        for i in range(n):
            x = block(i)
        return x

    return run


_run_popcnt = _make_runner(_popcnt_block)
_run_xor_popcnt_add = _make_runner(_xor_popcnt_add_block)


def _best_rates(fns: list, repeats: int) -> list[float]:
    """Operations per second of each ``(fn, n, per_call)`` (``fn(n)`` does ``n * per_call``), best of ``repeats``
    rounds run interleaved (short windows: on a shared machine some of them run uninterrupted)."""
    best = [float("inf")] * len(fns)
    for fn, _, _ in fns:
        fn(1)  # compile
    for _ in range(repeats):
        for i, (fn, n, _) in enumerate(fns):
            t = time.perf_counter()
            fn(n)
            best[i] = min(best[i], time.perf_counter() - t)
    return [n * per_call / b for (_, n, per_call), b in zip(fns, best)]


def has_vpopcntdq() -> bool:
    """Whether /proc/cpuinfo lists AVX-512 VPOPCNTDQ."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512_vpopcntdq" in line.split()
    except OSError:
        pass
    return False


def measure(repeats: int = 40, seconds: float = 0.002) -> dict[str, float | None]:
    """Measured clock (GHz) and 512-bit throughputs (per cycle and per second): the best of ``repeats``
    interleaved windows of about ``seconds`` each (about ``3 * repeats * seconds`` seconds in all).

    Keys: ``clock_ghz`` (None off x86-64); ``popcnt_zmm_per_s`` / ``popcnt_zmm_per_cycle`` (``vpopcntq`` alone) and
    ``xor_popcnt_add_zmm_per_s`` / ``..._per_cycle`` (the kernel's step), None without VPOPCNTDQ.
    """
    out: dict[str, float | None] = {"clock_ghz": None, "popcnt_zmm_per_s": None, "popcnt_zmm_per_cycle": None,
                                    "xor_popcnt_add_zmm_per_s": None, "xor_popcnt_add_zmm_per_cycle": None}
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return out  # the inline assembly is x86-64
    cycles = seconds * 3e9
    fns = [(_run_chain, int(cycles / CHAIN), CHAIN)]
    vpopcntdq = has_vpopcntdq()
    if vpopcntdq:
        fns += [(_run_popcnt, int(cycles / VECTORS), VECTORS),
                (_run_xor_popcnt_add, int(cycles / VECTORS / 1.5), VECTORS)]
    rates = _best_rates(fns, repeats)
    hz = rates[0]
    out["clock_ghz"] = hz / 1e9
    if vpopcntdq:
        pop, step = rates[1], rates[2]
        out.update(popcnt_zmm_per_s=pop, popcnt_zmm_per_cycle=pop / hz,
                   xor_popcnt_add_zmm_per_s=step, xor_popcnt_add_zmm_per_cycle=step / hz)
    return out


def popcount_words(cin: int, cout: int, out_pixels: int, kernel_size: int = 3, batch: int = 1) -> int:
    """64-bit words an XNOR-popcount layer popcounts: outputs x ``k*k`` taps x ``ceil(cin / 64)`` words."""
    return batch * cout * out_pixels * kernel_size * kernel_size * -(-cin // 64)


def bound_ms(words: int, zmm_per_s: float, threads: int = 1) -> float:
    """Time (ms) to popcount ``words`` 64-bit words at ``zmm_per_s`` 512-bit operations per second per thread."""
    return words / 8 / zmm_per_s / threads * 1e3

