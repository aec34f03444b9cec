// Tree-ensemble inference on a CUDA GPU: the same compiled program as the CPU
// evaluator (src/model/trees/eval.rs), flattened by `Program::device_layout`
// and uploaded once per model and device (src/model/trees/cuda.rs).
//
// Layout (every array in device memory, read-only):
// - features: f64, feature-major, `n_features x n_rows` (the block as
//   lakescore decodes it).
// - views: `n_views` pairs (feature, kind): the value a split reads, derived
//   from one feature in the library's precision (see `view_value`).
// - steps: one per node slot, `{threshold, view, first}`: go to `first` when
//   `view value <= threshold`, else to `first + 1`. Leaves point at themselves
//   and read the constant-zero view against +inf. `view` with the top bit set
//   indexes `categorical` instead (a set lookup).
// - trees: `{root, depth, group, has_categorical}`; `tree_order` lists them
//   group by group, in the model's tree order, from `group_start[g]` to
//   `group_start[g + 1]`.
// - out: `n_rows x n_groups`, row-major, in the library's precision T.
//
// Work split. A block stages the views of a chunk of rows in shared memory
// (coalesced reads of the feature columns, each view computed once per row),
// then `split` consecutive lanes of a warp share each row: in every round they
// walk `split` consecutive trees of the row, one each, and all of them add the
// round's leaves to the row's running value in tree order, fetched from the
// other lanes with warp shuffles. So the sum is the CPU evaluator's, bit for
// bit (float32 for XGBoost and ONNX, float64 for LightGBM), whatever `split`.
//
// Exactness: no fast-math (build.rs); only comparisons, conversions, negation
// and additions, which IEEE rounds the same on both devices.

#include <stdint.h>

#define CATEGORICAL 0x80000000u

// `ViewKind` in eval.rs, in its order.
enum ViewKind : uint32_t {
    VIEW_VALUE = 0,
    VIEW_NEGATED = 1,
    VIEW_LGB_VALUE = 2,
    VIEW_LGB_NEGATED = 3,
    VIEW_NAN_TO_ZERO = 4,
    VIEW_ZERO_TO_NAN = 5,
    VIEW_NEGATED_ZERO_TO_NAN = 6,
    VIEW_ZERO = 7,
};

// `SetRule` in eval.rs.
enum SetRule : uint32_t {
    RULE_XGB_CATEGORY = 0,
    RULE_LGB_CATEGORY = 1,
    RULE_MEMBER_FIRST = 2,
    RULE_MEMBER_SECOND = 3,
};

// `Aggregate` in trees/mod.rs.
enum Aggregate : uint32_t { AGG_SUM = 0, AGG_MIN = 1, AGG_MAX = 2 };

template <typename T>
__device__ __forceinline__ T infinity();
template <>
__device__ __forceinline__ float infinity<float>() { return __int_as_float(0x7f800000); }
template <>
__device__ __forceinline__ double infinity<double>() { return __longlong_as_double(0x7ff0000000000000ll); }

__device__ __forceinline__ double quiet_nan() { return __longlong_as_double(0x7ff8000000000000ll); }

template <typename T>
struct Step {
    T threshold;
    uint32_t view;
    uint32_t first;
};

struct Tree {
    uint32_t root;
    uint32_t depth;
    uint32_t group;
    uint32_t has_categorical;
};

struct Categorical {
    uint32_t view;
    uint32_t start;
    uint32_t end;
    uint32_t rule;
    uint32_t nan_first;
};

// LightGBM makes its dense input sparse first: |x| <= 1e-35 (as float32) is 0.
__device__ __forceinline__ bool lgb_is_zero(double x) {
    const double t = (double)1e-35f;
    return x >= -t && x <= t;
}

__device__ __forceinline__ double lgb_sparse(double x) { return lgb_is_zero(x) ? 0.0 : x; }

template <typename T>
__device__ __forceinline__ T view_value(uint32_t kind, double x) {
    switch (kind) {
        case VIEW_VALUE: return (T)x;
        case VIEW_NEGATED: return -(T)x;
        case VIEW_LGB_VALUE: return (T)lgb_sparse(x);
        case VIEW_LGB_NEGATED: return -(T)lgb_sparse(x);
        case VIEW_NAN_TO_ZERO: return (T)(isnan(x) ? 0.0 : lgb_sparse(x));
        case VIEW_ZERO_TO_NAN: return (T)(lgb_is_zero(x) ? quiet_nan() : x);
        case VIEW_NEGATED_ZERO_TO_NAN: return -(T)(lgb_is_zero(x) ? quiet_nan() : x);
        default: return (T)0;
    }
}

// Whether a set split sends `value` (in the library's precision) to its first
// child: `Program::categorical_goes_first` in eval.rs.
template <typename T>
__device__ bool categorical_goes_first(const Categorical &c, T value, const uint32_t *__restrict__ words,
                                       const T *__restrict__ members) {
    if (c.rule == RULE_MEMBER_FIRST || c.rule == RULE_MEMBER_SECOND) {
        if (isnan(value)) return c.nan_first != 0;
        bool member = false;
        for (uint32_t i = c.start; i < c.end; ++i) {
            if ((double)members[i] == (double)value) {
                member = true;
                break;
            }
        }
        return member == (c.rule == RULE_MEMBER_FIRST);
    }
    double x = (double)value;
    const uint32_t n_words = c.end - c.start;
    if (c.rule == RULE_XGB_CATEGORY) {
        // In the set goes right; missing to the default side; negative or
        // beyond float32's exact integers goes left.
        if (isnan(x)) return c.nan_first != 0;
        if (!(x >= 0.0 && x < 16777216.0)) return true;
        uint64_t category = (uint64_t)x;
        uint64_t w = category / 32;
        bool in_set = w < n_words && ((words[c.start + w] >> (category % 32)) & 1u);
        return !in_set;
    }
    // LightGBM: truncated first; in the set goes left, NaN and negative right.
    x = trunc(x);
    if (!(x >= 0.0 && x < 2147483648.0)) return false;
    uint64_t category = (uint64_t)x;
    uint64_t w = category / 32;
    return w < n_words && ((words[c.start + w] >> (category % 32)) & 1u);
}

template <typename T>
__device__ __forceinline__ T combine(uint32_t aggregate, T a, T b) {
    if (aggregate == AGG_SUM) return a + b;
    // fmin/fmax return the other argument for a NaN, like Rust's min/max.
    if (aggregate == AGG_MIN) return fmin(a, b);
    return fmax(a, b);
}

// The leaf one row reaches in one tree.
template <typename T>
__device__ __forceinline__ T walk(const Tree &tree, const T *row, const Step<T> *__restrict__ steps,
                                  const T *__restrict__ leaf_values, const Categorical *__restrict__ categorical,
                                  const uint32_t *__restrict__ words, const T *__restrict__ members) {
    uint32_t at = tree.root;
    for (uint32_t d = 0; d < tree.depth; ++d) {
        const Step<T> s = steps[at];
        bool second;
        // `has_categorical` is the same for every lane walking this tree, so
        // trees without set splits never take the lookup's branch.
        if (tree.has_categorical && (s.view & CATEGORICAL)) {
            const Categorical c = categorical[s.view & ~CATEGORICAL];
            second = !categorical_goes_first(c, row[c.view], words, members);
        } else {
            // `!(x <= t)`: NaN takes the second child.
            second = !(row[s.view] <= s.threshold);
        }
        const uint32_t next = s.first + (uint32_t)second;
        if (next == at) break;
        at = next;
    }
    return leaf_values[at];
}

// One block: `blockDim.x / split` rows, `split` lanes per row (a power of two
// dividing 32; blockDim.x a multiple of 32). Shared memory: rows x `stride` T.
template <typename T>
__device__ void trees_body(const double *__restrict__ features, uint64_t n_rows, uint32_t n_views,
                           const uint32_t *__restrict__ views, const Step<T> *__restrict__ steps,
                           const T *__restrict__ leaf_values, const Tree *__restrict__ trees,
                           const uint32_t *__restrict__ tree_order, const uint32_t *__restrict__ group_start,
                           uint32_t n_groups, const T *__restrict__ base_margin, uint32_t aggregate,
                           const Categorical *__restrict__ categorical, const uint32_t *__restrict__ words,
                           const T *__restrict__ members, uint32_t split, uint32_t stride, T *__restrict__ out) {
    extern __shared__ double shared_raw[];
    T *shared_views = reinterpret_cast<T *>(shared_raw);
    const uint32_t rows_per_block = blockDim.x / split;
    const uint64_t row0 = (uint64_t)blockIdx.x * rows_per_block;
    const uint32_t rows_here = (uint32_t)min((uint64_t)rows_per_block, n_rows - row0);

    // Stage: consecutive threads read consecutive rows of one feature.
    for (uint32_t i = threadIdx.x; i < n_views * rows_per_block; i += blockDim.x) {
        const uint32_t v = i / rows_per_block;
        const uint32_t r = i % rows_per_block;
        T value = (T)0;
        const uint32_t kind = views[2 * v + 1];
        if (r < rows_here && kind != VIEW_ZERO) {
            value = view_value<T>(kind, features[(uint64_t)views[2 * v] * n_rows + row0 + r]);
        }
        shared_views[r * stride + v] = value;
    }
    __syncthreads();

    const uint32_t r = threadIdx.x / split;
    const uint32_t lane = threadIdx.x % split;
    const T *row = shared_views + r * stride;
    // Rows past the end walk zeros (every lane must take part in the
    // shuffles) and write nothing.
    const bool active = r < rows_here;
    for (uint32_t g = 0; g < n_groups; ++g) {
        const uint32_t end = group_start[g + 1];
        T acc = aggregate == AGG_SUM ? base_margin[g] : (aggregate == AGG_MIN ? infinity<T>() : -infinity<T>());
        for (uint32_t first = group_start[g]; first < end; first += split) {
            const uint32_t k = first + lane;
            T leaf = (T)0;
            if (k < end) {
                const Tree tree = trees[tree_order[k]];
                leaf = walk(tree, row, steps, leaf_values, categorical, words, members);
            }
            // The round's leaves, in tree order (the bounds are the same for
            // every lane of the warp, so all of them shuffle).
            for (uint32_t j = 0; j < split && first + j < end; ++j) {
                const T l = split == 1 ? leaf : __shfl_sync(0xffffffffu, leaf, j, split);
                acc = combine(aggregate, acc, l);
            }
        }
        if (active && lane == 0) out[(row0 + r) * n_groups + g] = acc;
    }
}

#define TREES_KERNEL(NAME, T)                                                                                      \
    extern "C" __global__ void NAME(const double *features, uint64_t n_rows, uint32_t n_views,                     \
                                    const uint32_t *views, const Step<T> *steps, const T *leaf_values,              \
                                    const Tree *trees, const uint32_t *tree_order, const uint32_t *group_start,    \
                                    uint32_t n_groups, const T *base_margin, uint32_t aggregate,                   \
                                    const Categorical *categorical, const uint32_t *words, const T *members,       \
                                    uint32_t split, uint32_t stride, T *out) {                                     \
        trees_body<T>(features, n_rows, n_views, views, steps, leaf_values, trees, tree_order, group_start,       \
                      n_groups, base_margin, aggregate, categorical, words, members, split, stride, out);          \
    }

TREES_KERNEL(trees_f32, float)
TREES_KERNEL(trees_f64, double)
