"""Kernels of the array ops that are not elementwise, and the block helpers every array row uses.

Written once in plain Python over flat float64 blocks (C order) and the tape's int64 side table
``imeta`` (an entry starting at ``m``); compiled by Numba inside the generated sweeps module (see
:mod:`kernels.codegen`), which binds ``np``, ``carray`` and ``as_pointer``. A reverse kernel adds
to the adjoint blocks ``gx``/``gy`` of its operands; ``dx``/``dy`` say whether they need it.
"""

# ruff: noqa: F821  (np, carray, as_pointer, bits_of_float, call_kernel, data_of, dgemm, float_of_bits,
# OPERANDS: bound by the compiling namespace)


def value_block(r, op, a, vals, asize, vaddr):
    # the values of row r: its block when it is an array row, else its one scalar slot
    if op[r] == ARRAY_ROW:
        j = a[r]
        return carray(as_pointer(vaddr[j]), asize[j])
    return vals[r : r + 1]


def adjoint_block(r, op, a, adj, aoff, asize, aadj):
    # the adjoints of row r: its block, at offset aoff[j] from aadj's start (outside aadj for an
    # input row whose block is its entries of a gradient: alias_adjoints), else its scalar slot
    if op[r] == ARRAY_ROW:
        j = a[r]
        return carray(as_pointer(np.int64(aadj.ctypes.data) + 8 * aoff[j]), asize[j])
    return adj[r : r + 1]


def row_blocks(i, op, a, store, arr, astore):
    # the blocks of row i and of its operand rows (empty for operands that are not rows) in one
    # store: values (vals; astore: none, read by address) are value_blocks, the others adjoint_blocks
    code, ax, ay, ameta, aoff, asize, imeta = arr
    j = a[i]
    rows = OPERANDS[code[j]]
    z = adjoint_block(i, op, a, store, aoff, asize, astore)
    x = adjoint_block(ax[j], op, a, store, aoff, asize, astore) if rows & 1 else store[:0]
    y = adjoint_block(ay[j], op, a, store, aoff, asize, astore) if rows & 2 else store[:0]
    return z, x, y


def row_values(i, op, a, vals, arr, vaddr):
    # the values of row i and of its operand rows (empty for operands that are not rows)
    code, ax, ay, ameta, aoff, asize, imeta = arr
    j = a[i]
    rows = OPERANDS[code[j]]
    z = value_block(i, op, a, vals, asize, vaddr)
    x = value_block(ax[j], op, a, vals, asize, vaddr) if rows & 1 else vals[:0]
    y = value_block(ay[j], op, a, vals, asize, vaddr) if rows & 2 else vals[:0]
    return z, x, y


def broadcast_base(o, imeta, m, nd):
    # offsets in x and y of the o-th run of the innermost dimension of an elementwise row whose
    # entry is nd, shape[nd], x strides[nd], y strides[nd] (element strides, 0 where broadcast)
    bx = np.uint64(0)
    by = np.uint64(0)
    for d in range(nd - 2, -1, -1):
        extent = np.uint64(imeta[m + 1 + d])
        i = o % extent
        o //= extent
        bx += i * np.uint64(imeta[m + 1 + nd + d])
        by += i * np.uint64(imeta[m + 1 + 2 * nd + d])
    return bx, by


def gemm_arguments():
    # dgemm's by-pointer arguments: transpose flags, dimensions, alpha and beta (allocated once
    # per matmul row, filled per product)
    return np.empty(2, dtype=np.uint8), np.empty(6, dtype=np.int32), np.empty(2)


def gemm(out, a, b, rows, inner, cols, ta, tb, beta, arguments):
    # out = beta * out + op(a) @ op(b) on the C-ordered blocks starting at out, a, b: out holds
    # rows x cols, a rows x inner (inner x rows when ta), b inner x cols (cols x inner when tb).
    # One BLAS dgemm, no copies: in BLAS's column-major view the blocks are transposed, so it
    # computes out' = op(b)' op(a)'.
    if rows == 0 or cols == 0:
        return
    if inner == 0:
        if beta == 0.0:
            out[: rows * cols] = 0.0
        return
    flags, dims, scale = arguments
    flags[0] = 84 if tb else 78  # 'T', 'N'
    flags[1] = 84 if ta else 78
    dims[0], dims[1], dims[2] = cols, rows, inner
    dims[3] = inner if tb else cols
    dims[4] = rows if ta else inner
    dims[5] = cols
    scale[0], scale[1] = 1.0, beta
    dgemm(data_of(flags), data_of(flags[1:]), data_of(dims), data_of(dims[1:]), data_of(dims[2:]),
          data_of(scale), data_of(b), data_of(dims[3:]), data_of(a), data_of(dims[4:]),
          data_of(scale[1:]), data_of(out), data_of(dims[5:]))


def matmul_forward(x, y, out, imeta, m, beta=0.0):
    # out = x @ y (+ beta * out). Entry: batch, rows, inner, cols, x batch stride, y batch stride
    # (0: broadcast), y transposed (its block holds cols x inner: x @ w.T of a linear layer,
    # without moving w)
    batch, rows, inner, cols = imeta[m], imeta[m + 1], imeta[m + 2], imeta[m + 3]
    sx, sy, ty = imeta[m + 4], imeta[m + 5], imeta[m + 6]
    arguments = gemm_arguments()
    for t in range(batch):
        gemm(out[t * rows * cols :], x[t * sx :], y[t * sy :], rows, inner, cols, False, ty, beta, arguments)


def matmul_reverse(g, x, y, gx, gy, dx, dy, imeta, m):
    # gy sums over the rows of x: where x holds more than REREAD_BYTES and g, gy are small next to
    # it (x @ v, x a large matrix), it sums them in chunks of rows, last chunk first, so that the
    # rows the forward read last are read again while still in cache (llsq's V @ x, a 4 MB V:
    # 316 -> 237 us forward and back; kmeans' (10^4, 17) @ (17, 100) ran 5% slower so)
    batch, rows, inner, cols = imeta[m], imeta[m + 1], imeta[m + 2], imeta[m + 3]
    sx, sy, ty = imeta[m + 4], imeta[m + 5], imeta[m + 6]
    arguments = gemm_arguments()
    chunk = rows
    if 8 * rows * inner > REREAD_BYTES and 16 * cols <= inner:
        chunk = max(1, REREAD_CHUNK // (8 * (inner + cols)))
    for t in range(batch):
        gb = g[t * rows * cols :]
        if dx:  # gx += g @ y.T (y's block: cols x inner when ty, else inner x cols)
            gemm(gx[t * sx :], gb, y[t * sy :], rows, cols, inner, False, not ty, 1.0, arguments)
        if dy:
            for r0 in range((rows - 1) // chunk * chunk, -1, -chunk):
                r = min(chunk, rows - r0)
                xr, gr = x[t * sx + r0 * inner :], gb[r0 * cols :]
                if ty:  # gy (cols x inner) += g.T @ x
                    gemm(gy[t * sy :], gr, xr, cols, r, inner, True, False, 1.0, arguments)
                else:  # gy (inner x cols) += x.T @ g
                    gemm(gy[t * sy :], xr, gr, inner, r, cols, True, False, 1.0, arguments)


def pack_forward(vals, out, imeta, m):
    for k in range(out.shape[0]):
        out[k] = vals[imeta[m + k]]


def pack_reverse(g, adj, imeta, m):
    for k in range(g.shape[0]):
        adj[imeta[m + k]] += g[k]


def index_map(imeta, m, count):
    # the flat positions an index-map entry names, `count` of them: explicit (-1, positions...)
    # or strided (nd, offset, shape[nd], strides[nd]: the positions of a strided view, in C order,
    # run by run of the innermost dimension)
    nd = imeta[m]
    if nd < 0:
        return imeta[m + 1 : m + 1 + count]
    idx = np.empty(count, dtype=np.int64)
    if nd == 0:
        idx[:] = imeta[m + 1]
        return idx
    inner, step = imeta[m + 1 + nd], imeta[m + 1 + 2 * nd]
    for o in range(count // max(inner, 1)):
        base = strided_base(o, imeta, m, nd)
        for t in range(inner):
            idx[o * inner + t] = base + t * step
    return idx


def strided_base(o, imeta, m, nd):
    # position of the first element of the o-th run of the innermost dimension of a strided map
    pos = imeta[m + 1]
    for d in range(nd - 2, -1, -1):
        extent = imeta[m + 2 + d]
        pos += (o % extent) * imeta[m + 2 + nd + d]
        o //= extent
    return pos


def mapped_add(src, dst, imeta, m, count, gather, assign=False):
    # along the index map's `count` positions p_k: dst[k] += src[p_k] (gather) or dst[p_k] += src[k];
    # with `assign`, = for += (a scatter's map then names each position once: a join's). The
    # positions are unsigned where they index: no negative-index checks in the loops (a valid map
    # has none)
    nd = imeta[m]
    if nd == 0:  # one element (a 0-d view: an output element of tg.compile, x[i, j])
        if gather:
            dst[0] = src[imeta[m + 1]] if assign else dst[0] + src[imeta[m + 1]]
        else:
            dst[imeta[m + 1]] = src[0] if assign else dst[imeta[m + 1]] + src[0]
        return
    if nd < 0:  # explicit positions
        idx = imeta[m + 1 : m + 1 + count]
        for k in range(count):
            if gather:
                dst[k] = src[idx[k]] if assign else dst[k] + src[idx[k]]
            else:
                dst[idx[k]] = src[k] if assign else dst[idx[k]] + src[k]
        return
    inner, step = imeta[m + 1 + nd], imeta[m + 1 + 2 * nd]
    for o in range(count // max(inner, 1)):
        base = strided_base(o, imeta, m, nd)
        k0 = np.uint64(o * inner)
        if step == 0 and gather:  # a run reading one position: a broadcast
            v = src[base]
            for t in range(k0, k0 + np.uint64(inner)):
                dst[t] = v if assign else dst[t] + v
        elif step == 0:  # a run summed into one position (a reduction)
            dst[base] = run_sum(src, k0, inner) + (0.0 if assign else dst[base])
        elif gather:
            for t in range(inner):
                p = src[np.uint64(base + t * step)]
                dst[k0 + t] = p if assign else dst[k0 + t] + p
        elif assign:
            for t in range(inner):
                dst[np.uint64(base + t * step)] = src[k0 + t]
        else:
            for t in range(inner):
                dst[np.uint64(base + t * step)] += src[k0 + t]


def run_sum(v, k0, n):
    # v[k0] + ... + v[k0 + n - 1] in four interleaved partial sums (no chain of dependent adds)
    s0 = s1 = s2 = s3 = 0.0
    start, quads = np.uint64(k0), np.uint64(n) // np.uint64(4)  # (unsigned: no negative-index checks)
    for q in range(quads):
        k = start + np.uint64(4) * q
        s0 += v[k]
        s1 += v[k + np.uint64(1)]
        s2 += v[k + np.uint64(2)]
        s3 += v[k + np.uint64(3)]
    for k in range(start + np.uint64(4) * quads, start + np.uint64(n)):
        s0 += v[k]
    return (s0 + s1) + (s2 + s3)


def gather_forward(x, out, imeta, m):
    mapped_add(x, out, imeta, m, out.shape[0], True, True)


def gather_reverse(g, gx, imeta, m):
    mapped_add(g, gx, imeta, m, g.shape[0], False)


def sum_into_forward(x, out, imeta, m):
    out[:] = 0.0
    mapped_add(x, out, imeta, m, x.shape[0], False)


def sum_into_reverse(g, gx, imeta, m):
    mapped_add(g, gx, imeta, m, gx.shape[0], True)


def map_length(imeta, m, count):
    # the length of the index map at m over `count` elements (strided: nd, offset, shape, strides)
    nd = imeta[m]
    return 1 + count if nd < 0 else 2 + 2 * nd


def join_forward(x, y, out, imeta, m):
    mapped_add(x, out, imeta, m, x.shape[0], False, True)
    mapped_add(y, out, imeta, m + map_length(imeta, m, x.shape[0]), y.shape[0], False, True)


def join_reverse(g, gx, gy, dx, dy, imeta, m):
    if dx:
        mapped_add(g, gx, imeta, m, gx.shape[0], True)
    if dy:
        mapped_add(g, gy, imeta, m + map_length(imeta, m, gx.shape[0]), gy.shape[0], True)


def segment_runs(imeta, m, count):
    # the runs of the innermost dimension of a segment map over `count` elements: (their
    # segments, their length, across): each run into one segment (stride 0: seg[o] is run o's
    # segment), or across consecutive segments (stride 1: seg[o] is its first element's); any
    # other map: runs of one element (across, seg[k] element k's segment)
    nd = imeta[m]
    if nd > 0 and (imeta[m + 1 + 2 * nd] == 0 or imeta[m + 1 + 2 * nd] == 1):
        inner = max(imeta[m + 1 + nd], 1)
        seg = np.empty(count // inner, dtype=np.int64)
        for o in range(seg.shape[0]):
            seg[o] = strided_base(o, imeta, m, nd)
        return seg, inner, imeta[m + 1 + 2 * nd] == 1
    return index_map(imeta, m, count), 1, True


def run_segments(imeta, m, count):
    # segment_runs' runs when each goes to one segment, else runs of one element
    seg, inner, across = segment_runs(imeta, m, count)
    return (index_map(imeta, m, count), 1) if across and inner > 1 else (seg, inner)


def extreme_into_forward(x, out, imeta, m, sign):
    # sign 1.0: the maximum of each segment, -1.0: the minimum; NaN wins, as in torch
    out[:] = -np.inf * sign
    nd = imeta[m]
    if nd > 0 and imeta[m + 1 + 2 * nd] == 1:  # a run over consecutive segments (a leading axis)
        inner = imeta[m + 1 + nd]
        for o in range(x.shape[0] // max(inner, 1)):
            base, k0 = np.uint64(strided_base(o, imeta, m, nd)), np.uint64(o * inner)
            for t in range(np.uint64(inner)):
                v, e = x[k0 + t], out[base + t]
                out[base + t] = v if v * sign > e * sign or v != v else e
        return
    seg, inner = run_segments(imeta, m, x.shape[0])
    for o in range(seg.shape[0]):
        s = seg[o]
        v = run_extreme(x, o * inner, inner, sign)
        if v * sign > out[s] * sign or np.isnan(v):
            out[s] = v


def run_extreme(x, k0, n, sign):
    # the extreme of x[k0 : k0 + n] (NaN if one is NaN; -inf * sign if n is 0) as a maximum of
    # integers, which vectorizes (a float maximum that keeps NaN does not: 3x as long on 160000
    # elements): flipping the bits after the sign of the negative floats orders their bit patterns
    # as the floats (-0.0 below 0.0), and complementing them all (sign -1.0) turns a minimum into
    # a maximum. NaN is found by a compare in the same loop.
    ones = np.int64(0x7FFFFFFFFFFFFFFF)
    flip = np.int64(0) if sign > 0.0 else np.int64(-1)
    start = np.int64(-4503599627370496) if sign > 0.0 else np.int64(0x7FF0000000000000)  # -inf, inf
    best = (start ^ ((start >> 63) & ones)) ^ flip
    nan = False
    for k in range(np.uint64(k0), np.uint64(k0 + n)):  # (unsigned: no negative-index checks)
        b = bits_of_float(x[k])
        key = (b ^ ((b >> 63) & ones)) ^ flip
        best = key if key > best else best
        nan |= x[k] != x[k]
    best ^= flip
    return np.nan if nan else float_of_bits(best ^ ((best >> 63) & ones))


def small_angles(x, start, n):
    # whether |x[k]| < 1e5 for every k in [start, start + n) (NaN: not): the range where vsin
    # and vcos hold (a count, which vectorizes, rather than an early exit)
    count = 0
    for k in range(np.uint64(start), np.uint64(start + n)):
        count += abs(x[k]) < 1e5
    return count == n


def reduce_quarter(x):
    # x = q pi/2 + (rh + rl) with |rh| <= pi/4 (about), for |x| < 1e5: q = x 2/pi rounded; pi/2
    # in three parts of 33 bits (q times each is exact for |q| < 2^20) and a tail (fdlibm's
    # split), the remainder as a double-double by error-free sums (Knuth's two-sum), so that it
    # keeps its relative accuracy where x is within a few ulps of a multiple of pi/2
    qf = (x * 0.63661977236758134308 + 6755399441055744.0) - 6755399441055744.0
    a = x - qf * 1.57079632673412561417e00
    b = -(qf * 6.07710050630396597660e-11)
    s = a + b
    v = s - a
    low = ((a - (s - v)) + (b - v) - qf * 2.02226624871116645580e-21) - qf * 8.47842766036889956997e-32
    rh = s + low
    w = rh - s
    return rh, (s - (rh - w)) + (low - w), np.int64(qf)


def sin_kernel(x, y):
    # sin(x + y) for |x| <= pi/4, |y| tiny: x + x^3 S(x^2), its error term y cos(x) to first order
    # (the minimax coefficients of fdlibm's __kernel_sin)
    z = x * x
    r = (8.33333333332248946124e-03 + z * (-1.98412698298579493134e-04 + z * 2.75573137070700676789e-06)
         + z * z * z * (-2.50507602534068634195e-08 + z * 1.58969099521155010221e-10))
    v = z * x
    return x - ((z * (0.5 * y - v * r) - y) + v * 1.66666666666666324348e-01)


def cos_kernel(x, y):
    # cos(x + y) for |x| <= pi/4: 1 - x^2/2 + x^4 C(x^2), summed so that 1 - x^2/2 loses nothing,
    # and -x y (fdlibm's __kernel_cos coefficients)
    z = x * x
    w = z * z
    high = -2.75573143513906633035e-07 + z * (2.08757232129817482790e-09 - z * 1.13596475577881948265e-11)
    r = z * (4.16666666666666019037e-02 + z * (-1.38888888888741095749e-03 + z * 2.48015872894767294178e-05))
    r += w * w * high
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + (z * r - x * y))


def vsin(x):
    # sin(x) within 1 ulp of libm's for |x| < 1e5 (small_angles: the kernels check a run first,
    # and call libm's for any other), in arithmetic only, so that a loop of it vectorizes: both
    # kernels, the quadrant's picked by selects
    rh, rl, q = reduce_quarter(x)
    s, c = sin_kernel(rh, rl), cos_kernel(rh, rl)
    v = c if q & 1 else s
    v = -v if q & 2 else v
    return v if x != 0.0 else x  # (sin(-0.0) is -0.0)


def vcos(x):
    # cos(x) as vsin's sin(x)
    rh, rl, q = reduce_quarter(x)
    s, c = sin_kernel(rh, rl), cos_kernel(rh, rl)
    v = s if q & 1 else c
    return -v if (q + 1) & 2 else v


def vexp(x):
    # exp(x) within 1 ulp of libm's, in arithmetic only, so that a loop of it vectorizes (libm's
    # exp is a call per element): x = k ln 2 + r with |r| <= ln(2)/2 (ln 2 in two parts, Cody and
    # Waite), exp(r) by its Taylor polynomial of degree 13 (Horner's steps fused into FMAs where
    # the machine has them: twice as fast), times 2^k as two powers of two (so that subnormal
    # results come out right). NaN stays NaN; out of range: inf or 0.
    inside = x > -745.2 and x < 709.8
    xc = x if inside else 0.0
    kf = (xc * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0  # round(x / ln 2)
    r = (xc - kf * 6.93147180369123816490e-01) - kf * 1.90821492927058770002e-10
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    k = np.int64(kf)
    h = k >> 1
    y = p * float_of_bits((h + 1023) << 52) * float_of_bits((k - h + 1023) << 52)
    outside = x + x if x != x else (np.inf if x > 0.0 else 0.0)
    return y if inside else outside


def attains(v, extreme):
    # whether element v is its segment's extreme (a NaN extreme: the NaN elements, as torch)
    return (v == extreme) | ((v != v) & (extreme != extreme))  # (no branch: loops of it vectorize)


def any_nonzero(g):
    # whether g holds a nonzero (NaN included), by chunks that vectorize: ndarray.any() in Numba
    # tests one element at a time, 3x slower on a block of zeros
    n = g.shape[0]
    for c0 in range(0, n, 256):
        hit = False
        for k in range(c0, min(c0 + 256, n)):
            hit |= g[k] != 0.0
        if hit:
            return True
    return False


def extreme_into_reverse(g, x, z, gx, imeta, m):
    # the segment's gradient, split evenly between the elements equal to its extreme
    if not any_nonzero(g):  # (the tangents of a max's adjoints, in a second-order sweep, are often 0)
        return
    seg, inner = run_segments(imeta, m, x.shape[0])
    ties = np.zeros(z.shape[0], dtype=np.int64)
    counts, at = np.empty(seg.shape[0], dtype=np.int64), np.empty(seg.shape[0], dtype=np.uint64)
    for o in range(seg.shape[0]):
        s = seg[o]
        if g[s] != 0.0:
            counts[o], at[o] = run_ties(x, o * inner, inner, z[s])
            ties[s] += counts[o]
    for o in range(seg.shape[0]):
        s = seg[o]
        if g[s] == 0.0 or counts[o] == 0:
            continue
        share, e, k0 = g[s] / ties[s], z[s], np.uint64(o * inner)
        if counts[o] == 1:  # (most often)
            gx[at[o]] += share
            continue
        for k in range(k0, k0 + np.uint64(inner)):  # (unsigned: no negative-index checks)
            gx[k] += share if attains(x[k], e) else 0.0


def run_ties(x, k0, n, e):
    # how many of x[k0 : k0 + n] attain the extreme e, and the sum of their positions (the
    # position of the one, if one does): sums of integers, so that the loop vectorizes
    count, at = 0, np.uint64(0)
    for k in range(np.uint64(k0), np.uint64(k0 + n)):
        hit = attains(x[k], e)
        count += 1 if hit else 0
        at += k if hit else np.uint64(0)
    return count, at


def prod_into_forward(x, out, imeta, m):
    idx = index_map(imeta, m, x.shape[0])
    out[:] = 1.0
    for k in range(x.shape[0]):
        out[idx[k]] *= x[k]


def prod_into_reverse(g, x, gx, imeta, m):
    # d prod / d x_k = product of the segment's other elements, without dividing by a zero x_k
    idx = index_map(imeta, m, x.shape[0])
    zeros, rest = prod_segments(x, idx, g.shape[0])
    for k in range(x.shape[0]):
        s = idx[k]
        if g[s] != 0.0:
            gx[k] += g[s] * prod_partial(x, k, s, zeros, rest)


def matmul_tangent(x, y, xd, yd, zd, dx, dy, imeta, m):
    # d(x @ y) = xd @ y + x @ yd (an operand without a tangent contributes nothing)
    if not (dx or dy):
        zd[:] = 0.0
    if dx:
        matmul_forward(xd, y, zd, imeta, m, 0.0)
    if dy:
        matmul_forward(x, yd, zd, imeta, m, 1.0 if dx else 0.0)


def extreme_into_tangent(x, z, xd, zd, imeta, m):
    # the tangent of a segment's extreme: the mean of its tied elements' tangents (the reverse
    # rule splits the gradient evenly between them)
    seg, inner = run_segments(imeta, m, x.shape[0])
    ties = np.zeros(z.shape[0])
    zd[:] = 0.0
    for o in range(seg.shape[0]):
        s = seg[o]
        e = z[s]
        count, at = run_ties(x, o * inner, inner, e)
        total = xd[at] if count == 1 else 0.0
        if count > 1:
            k0 = np.uint64(o * inner)
            for k in range(k0, k0 + np.uint64(inner)):
                if attains(x[k], e):
                    total += xd[k]
        ties[s] += count
        zd[s] += total
    for s in range(z.shape[0]):
        if ties[s] > 0.0:
            zd[s] /= ties[s]


def prod_segments(x, idx, n):
    # per segment: the number of zeros and the product of the nonzero elements
    zeros = np.zeros(n)
    rest = np.ones(n)
    for k in range(x.shape[0]):
        s = idx[k]
        if x[k] == 0.0:
            zeros[s] += 1.0
        else:
            rest[s] *= x[k]
    return zeros, rest


def prod_partial(x, k, s, zeros, rest):
    # d prod / d x_k for element k of segment s
    if zeros[s] == 0.0:
        return rest[s] / x[k]
    if zeros[s] == 1.0 and x[k] == 0.0:
        return rest[s]
    return 0.0


def prod_into_tangent(x, xd, zd, imeta, m):
    idx = index_map(imeta, m, x.shape[0])
    zeros, rest = prod_segments(x, idx, zd.shape[0])
    zd[:] = 0.0
    for k in range(x.shape[0]):
        if xd[k] != 0.0:
            s = idx[k]
            zd[s] += xd[k] * prod_partial(x, k, s, zeros, rest)


def prod_into_second_order(g, gd, x, xd, gx, gxd, imeta, m):
    # gx += g dp/dx_k; gxd += gd dp/dx_k + g sum_j d2p/dx_k dx_j xd_j, where d2p/dx_k dx_j (j != k)
    # is the product of the segment without x_k and x_j
    idx = index_map(imeta, m, x.shape[0])
    n = g.shape[0]
    zeros, rest = prod_segments(x, idx, n)
    # per segment: sum of xd_j / x_j over nonzero x_j, and the tangent of the zero element(s)
    ratio = np.zeros(n)
    zero_tangent = np.zeros(n)
    for k in range(x.shape[0]):
        s = idx[k]
        if x[k] != 0.0:
            ratio[s] += xd[k] / x[k]
        else:
            zero_tangent[s] += xd[k]
    for k in range(x.shape[0]):
        s = idx[k]
        if g[s] == 0.0 and gd[s] == 0.0:
            continue
        p = prod_partial(x, k, s, zeros, rest)
        if zeros[s] == 0.0:  # sum_{j != k} (rest / (x_k x_j)) xd_j
            cross = rest[s] / x[k] * (ratio[s] - xd[k] / x[k])
        elif zeros[s] == 1.0:
            cross = rest[s] * (ratio[s] if x[k] == 0.0 else zero_tangent[s] / x[k])
        elif zeros[s] == 2.0 and x[k] == 0.0:
            cross = rest[s] * (zero_tangent[s] - xd[k])  # the other zero's tangent
        else:
            cross = 0.0
        gx[k] += g[s] * p
        gxd[k] += gd[s] * p + g[s] * cross


def segment_count(imeta, m, count):
    # how many segments an index map over `count` elements names (its largest position + 1)
    idx = index_map(imeta, m, count)
    top = -1
    for k in range(count):
        if idx[k] > top:
            top = idx[k]
    return idx, top + 1


def segment_sums(v, idx, n):
    sums = np.zeros(n)
    for k in range(v.shape[0]):
        sums[idx[k]] += v[k]
    return sums


def log_softmax_forward(x, out, imeta, m):
    # out = x - max - log(sum(exp(x - max))) per segment (the max of an all -inf segment: 0)
    idx, n = segment_count(imeta, m, x.shape[0])
    top = np.full(n, -np.inf)
    for k in range(x.shape[0]):
        if x[k] > top[idx[k]]:
            top[idx[k]] = x[k]
    for s in range(n):
        if not np.isfinite(top[s]):
            top[s] = 0.0
    sums = np.zeros(n)
    for k in range(x.shape[0]):
        sums[idx[k]] += vexp(x[k] - top[idx[k]])
    for s in range(n):  # (one log per segment, not per element)
        sums[s] = np.log(sums[s])
    for k in range(x.shape[0]):
        out[k] = x[k] - top[idx[k]] - sums[idx[k]]


def log_softmax_reverse(g, z, gx, imeta, m):
    # gx += g - softmax * (segment sum of g)
    idx, n = segment_count(imeta, m, z.shape[0])
    total = segment_sums(g, idx, n)
    for k in range(z.shape[0]):
        gx[k] += g[k] - vexp(z[k]) * total[idx[k]]


def log_softmax_tangent(z, xd, zd, imeta, m):
    # zd = xd - (segment sum of softmax * xd)
    idx, n = segment_count(imeta, m, z.shape[0])
    p = np.exp(z)
    mean = segment_sums(p * xd, idx, n)
    for k in range(z.shape[0]):
        zd[k] = xd[k] - mean[idx[k]]


def log_softmax_second_order(g, gd, z, xd, gx, gxd, imeta, m):
    # gx += g - p S(g); gxd += gd - p S(gd) - p zd S(g), with p = softmax, zd its log's tangent
    idx, n = segment_count(imeta, m, z.shape[0])
    p = np.exp(z)
    total, total_d, mean = segment_sums(g, idx, n), segment_sums(gd, idx, n), segment_sums(p * xd, idx, n)
    for k in range(z.shape[0]):
        s = idx[k]
        gx[k] += g[k] - p[k] * total[s]
        gxd[k] += gd[k] - p[k] * total_d[s] - p[k] * (xd[k] - mean[s]) * total[s]


def exp_into(x, out, n):
    # out[:n] = exp(x[:n]) (out may be x) by the vector exp kernels.blas bound: MKL's (0.6 ns an
    # element on the project's machine, where a loop of vexp took 1.7) or a loop of vexp; in
    # calls of at most 2^24 elements (the kernel counts in int32)
    for s0 in range(0, n, 1 << 24):
        vector_exp(np.int32(min(1 << 24, n - s0)), data_of(x[s0:]), data_of(out[s0:]))


def run_exps(x, k0, n, shift, chunk):
    # chunk[:n] = exp(x[k0 : k0 + n] - shift), n at most the chunk's size
    base = np.uint64(k0)
    for t in range(np.uint64(n)):
        chunk[t] = x[base + t] - shift
    exp_into(chunk, chunk, n)


def run_exp_sum(x, k0, n, shift, weights, chunk):
    # sum of exp(x[k] - shift) (times weights[k] if weights is not empty) over x[k0 : k0 + n]:
    # the exps of a chunk at a time, then their sum
    total = 0.0
    for c0 in range(0, n, chunk.shape[0]):
        size = min(chunk.shape[0], n - c0)
        run_exps(x, k0 + c0, size, shift, chunk)
        if weights.shape[0]:
            base = np.uint64(k0 + c0)
            for t in range(np.uint64(size)):
                chunk[t] *= weights[base + t]
        total += run_sum(chunk, 0, size)
    return total


def logsumexp_into_forward(x, out, imeta, m):
    # out[s] = log(sum of exp(x[k] - shift) over segment s) + shift, the shift the segment's
    # maximum where finite (else 0.0). Runs across segments are elementwise loops, which vectorize
    seg, inner, across = segment_runs(imeta, m, x.shape[0])
    shift = np.full(out.shape[0], -np.inf)
    for o in range(seg.shape[0]):
        s, k0 = np.uint64(seg[o]), np.uint64(o * inner)
        if across:
            for t in range(np.uint64(inner)):
                v, e = x[k0 + t], shift[s + t]
                shift[s + t] = v if v > e or v != v else e
        else:
            v = run_extreme(x, o * inner, inner, 1.0)
            shift[s] = v if v > shift[s] or v != v else shift[s]
    for s in range(out.shape[0]):
        shift[s] = shift[s] if np.isfinite(shift[s]) else 0.0
    segment_exp_sums(x, shift, x[:0], out, seg, inner, across)
    for s in range(out.shape[0]):
        out[s] = np.log(out[s]) + shift[s]


def segment_exp_sums(x, centre, weights, out, seg, inner, across):
    # out[s] = the sum of exp(x[k] - centre[s]) (times weights[k] if weights is not empty) over
    # segment s, the runs as segment_runs gives them
    out[:] = 0.0
    chunk = np.empty(0 if across else min(inner, 512))
    for o in range(seg.shape[0]):
        s, k0 = np.uint64(seg[o]), np.uint64(o * inner)
        if across:
            for t in range(np.uint64(inner)):
                e = vexp(x[k0 + t] - centre[s + t])
                out[s + t] += e * weights[k0 + t] if weights.shape[0] else e
        else:
            out[s] += run_exp_sum(x, k0, inner, centre[s], weights, chunk)


def logsumexp_into_reverse(g, x, z, gx, imeta, m, fresh):
    # gx[k] += g[s] softmax(x)[k] = g[s] exp(x[k] - z[s]) (a zero g[s]: nothing); `fresh`: gx[k]
    # is assigned, the exps computed in place a chunk at a time
    seg, inner, across = segment_runs(imeta, m, x.shape[0])
    chunk = np.empty(0 if across or fresh else min(inner, CHUNK))
    for o in range(seg.shape[0]):
        s, k0 = np.uint64(seg[o]), np.uint64(o * inner)
        if across:
            for t in range(np.uint64(inner)):
                gs = g[s + t]
                push = gs * vexp(x[k0 + t] - z[s + t]) if gs != 0.0 else 0.0
                gx[k0 + t] = push if fresh else gx[k0 + t] + push
        elif fresh and g[s] == 0.0:
            gx[k0 : k0 + np.uint64(inner)] = 0.0
        elif fresh:
            for c0 in range(0, inner, CHUNK):
                size, base = min(CHUNK, inner - c0), k0 + np.uint64(c0)
                run_exps(x, base, size, z[s], gx[base:])
                if g[s] != 1.0:
                    for t in range(np.uint64(size)):
                        gx[base + t] *= g[s]
        elif g[s] != 0.0:
            for c0 in range(0, inner, CHUNK):
                size, base = min(CHUNK, inner - c0), k0 + np.uint64(c0)
                run_exps(x, base, size, z[s], chunk)
                for t in range(np.uint64(size)):
                    gx[base + t] += g[s] * chunk[t]


def logsumexp_into_tangent(x, z, xd, zd, imeta, m):
    # zd[s] = sum of softmax(x)[k] xd[k] over segment s
    seg, inner, across = segment_runs(imeta, m, x.shape[0])
    segment_exp_sums(x, z, xd, zd, seg, inner, across)


def logsumexp_into_second_order(g, gd, x, z, xd, gx, gxd, imeta, m):
    # gx += g p; gxd += gd p + g p (xd - zd) with p = softmax(x), zd the result's tangent
    seg, inner, across = segment_runs(imeta, m, x.shape[0])
    zd = np.empty(z.shape[0])
    logsumexp_into_tangent(x, z, xd, zd, imeta, m)
    for o in range(seg.shape[0]):
        s0, k0 = np.uint64(seg[o]), np.uint64(o * inner)
        for t in range(np.uint64(inner)):
            s = s0 + t if across else s0
            if g[s] != 0.0 or gd[s] != 0.0:
                p = vexp(x[k0 + t] - z[s])
                gx[k0 + t] += g[s] * p
                gxd[k0 + t] += gd[s] * p + g[s] * p * (xd[k0 + t] - zd[s])


def softmax_rows(x, n, c, normalize=True):
    # the softmax of each of x's n rows of c scores, each shifted by its maximum where finite
    # (else 0.0): (p, the shifts, the sums of exp(x - shift), whose log + shift is the row's
    # logsumexp); without `normalize`, p is exp(x - shift) (a forward needs only the sums). One
    # vector exp for all the rows: one call per row cost 80 ns a row of two classes, most of a
    # small batch's loss
    p, shift, total = np.empty(n * c), np.empty(n), np.empty(n)
    for i in range(n):
        top = run_extreme(x, i * c, c, 1.0)
        shift[i] = top if np.isfinite(top) else 0.0
        k0 = np.uint64(i * c)
        for j in range(np.uint64(c)):
            p[k0 + j] = x[k0 + j] - shift[i]
    exp_into(p, p, n * c)
    for i in range(n):
        total[i] = run_sum(p, i * c, c)
        if not normalize:
            continue
        scale = 1.0 / total[i]
        k0 = np.uint64(i * c)
        for j in range(np.uint64(c)):
            p[k0 + j] *= scale
    return p, shift, total


def sample_weight(g, i, n, reduction):
    # the adjoint of sample i's loss: its own (reduction 0: none), the sum's (1) or the mean's (2)
    if reduction == 0:
        return g[i]
    return g[0] / n if reduction == 2 else g[0]


def reduce_samples(per, out, reduction):
    # out = the samples' values `per` (reduction 0: none), their sum (1) or their mean (2)
    if reduction == 0:
        out[:] = per
    else:
        out[0] = per.sum() / per.shape[0] if reduction == 2 else per.sum()


def cross_entropy_forward(x, out, imeta, m):
    # entry: n samples, c classes, the reduction (0 none, 1 sum, 2 mean), then the n targets;
    # sample i's loss is logsumexp(x[i c : (i + 1) c]) - x[i c + target i]
    n, c, reduction = imeta[m], imeta[m + 1], imeta[m + 2]
    _, shift, total = softmax_rows(x, n, c, False)
    per = np.empty(n)
    for i in range(n):
        per[i] = np.log(total[i]) - (x[i * c + imeta[m + 3 + i]] - shift[i])
    reduce_samples(per, out, reduction)


def cross_entropy_reverse(g, x, gx, imeta, m):
    # gx += w (softmax - onehot(target)) per sample, w the adjoint of its loss
    n, c, reduction = imeta[m], imeta[m + 1], imeta[m + 2]
    p = softmax_rows(x, n, c)[0]
    for i in range(n):
        w = sample_weight(g, i, n, reduction)
        if w != 0.0:
            k0 = np.uint64(i * c)
            for j in range(np.uint64(c)):
                gx[k0 + j] += w * p[k0 + j]
            gx[k0 + np.uint64(imeta[m + 3 + i])] -= w


def cross_entropy_tangent(x, xd, zd, imeta, m):
    # sample i's loss's tangent: softmax . xd[i] - xd[i, target i]
    n, c, reduction = imeta[m], imeta[m + 1], imeta[m + 2]
    p, per = softmax_rows(x, n, c)[0], np.empty(n)
    for i in range(n):
        k0 = np.uint64(i * c)
        d = -xd[k0 + np.uint64(imeta[m + 3 + i])]
        for j in range(np.uint64(c)):
            d += p[k0 + j] * xd[k0 + j]
        per[i] = d
    reduce_samples(per, zd, reduction)


def cross_entropy_second_order(g, gd, x, xd, gx, gxd, imeta, m):
    # gx += w (p - onehot); gxd += wd (p - onehot) + w p (xd - p . xd), with p = softmax and
    # w, wd the adjoint of the sample's loss and its tangent
    n, c, reduction = imeta[m], imeta[m + 1], imeta[m + 2]
    p = softmax_rows(x, n, c)[0]
    for i in range(n):
        w, wd = sample_weight(g, i, n, reduction), sample_weight(gd, i, n, reduction)
        if w != 0.0 or wd != 0.0:
            k0 = np.uint64(i * c)
            mean = 0.0
            for j in range(np.uint64(c)):
                mean += p[k0 + j] * xd[k0 + j]
            for j in range(np.uint64(c)):
                pj = p[k0 + j]
                gx[k0 + j] += w * pj
                gxd[k0 + j] += wd * pj + w * pj * (xd[k0 + j] - mean)
            t = k0 + np.uint64(imeta[m + 3 + i])
            gx[t] -= w
            gxd[t] -= wd


def custom_forward(x, z, imeta, m):
    # entry: the addresses of a user op's forward, vjp and jvp kernels (0: not given), its id,
    # then the shapes its kernels read (see tapegrad.custom)
    call_kernel(imeta[m], x, z, z, z, imeta[m + 4 :])


def custom_reverse(g, x, z, gx, imeta, m):
    # gx += the op's vector-Jacobian product with g
    call_kernel(imeta[m + 1], x, z, g, gx, imeta[m + 4 :])


def custom_tangent(x, z, xd, zd, imeta, m):
    # zd = the op's Jacobian-vector product with xd (NaN without a jvp rule: tapegrad refuses
    # tangent sweeps through such an op before they start)
    if imeta[m + 2] == 0:
        zd[:] = np.nan
    else:
        call_kernel(imeta[m + 2], x, z, xd, zd, imeta[m + 4 :])
