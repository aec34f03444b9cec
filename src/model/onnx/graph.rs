//! An ONNX graph compiled for inference: the nodes the score output depends
//! on, in order, each an [`Op`] with its attributes checked at load; the
//! rest of the graph (label outputs, string classes) is never run. Nodes
//! whose inputs are all constants are folded at load.
//!
//! Neural operators run as candle ops on the model's device; ONNX-ML
//! operators are in [`super::ml`].

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Device, Tensor};

use super::dense::Dense;
use super::ml::MlOp;
pub use super::node::{Attributes, Compiler, NodeError, SUPPORTED_OPS, describe_node};
use super::proto::{ElemType, GraphProto, NodeProto, TensorData, TensorProto};
use crate::model::{sigmoid, softmax};

#[derive(Debug, Clone, Copy)]
pub enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    Erf,
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    Reciprocal,
}

#[derive(Debug, Clone, Copy)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// One compiled operator.
#[derive(Debug)]
pub enum Op {
    Identity,
    Unary(Unary),
    Binary(Binary),
    LeakyRelu {
        alpha: f64,
    },
    /// 1 where the value is NaN, else 0 (u8, lakescore's booleans).
    IsNaN,
    /// `condition ? x : y`, broadcasting.
    Where,
    /// `x ^ exponent` for a constant scalar exponent.
    Pow {
        exponent: f64,
    },
    Gelu {
        tanh: bool,
    },
    Gemm {
        alpha: f64,
        beta: f64,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    /// Opset 13 and later: along `axis`; before: the input coerced to 2-D at `axis`.
    Softmax {
        axis: i64,
        coerce_2d: bool,
    },
    Concat {
        axis: i64,
    },
    BatchNormalization {
        epsilon: f64,
    },
    Cast {
        to: DType,
    },
    /// `shape`: the target shape when it is a constant.
    Reshape {
        allowzero: bool,
        shape: Option<Vec<i64>>,
    },
    Flatten {
        axis: i64,
    },
    /// `axes`: from the attribute (before opset 13) or a constant input.
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// Constant starts, ends, axes (default all) and positive steps.
    Slice {
        starts: Vec<i64>,
        ends: Vec<i64>,
        axes: Option<Vec<i64>>,
        steps: Option<Vec<i64>>,
    },
    Gather {
        axis: i64,
    },
    /// A `Gemm` with constant weights and bias, and the `Relu` after it.
    Dense(Box<Dense>),
    Ml(Box<MlOp>),
}

/// A node ready to run: its op and the slots of its inputs and outputs
/// (`None` for an omitted optional input).
#[derive(Debug)]
pub struct Step {
    pub op: Op,
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
    /// For errors at run time.
    pub describe: String,
}

/// How the graph's inputs are fed from a feature block.
#[derive(Debug, Clone)]
pub struct GraphInput {
    pub name: String,
    pub slot: usize,
    /// Features this input takes (its last dimension).
    pub width: usize,
    /// Float32 or float64.
    pub dtype: DType,
    /// Shape `[N]` rather than `[N, width]`.
    pub rank1: bool,
    /// Per-column element-wise ops folded into the conversion from the
    /// block (a standardisation, a NaN replacement): applied in order.
    pub prelude: Vec<ColumnOp>,
    /// The slot the converted (and prelude-applied) tensor feeds.
    pub feeds: usize,
    /// Whether the tensor is handed over column-major (a transposed view of
    /// the feature-major values, no transposition): when dense layers,
    /// which take any strides, are its only readers.
    pub column_major: bool,
    /// Whether no tensor is made at all: tree ensembles, which read the
    /// block itself, are its only readers.
    pub block_only: bool,
}

/// One element-wise op of a graph input's prelude, with its per-column
/// constant (one value, or one per column).
#[derive(Debug, Clone)]
pub enum ColumnOp {
    Add(Vec<f32>),
    /// `x - c`, and `c - x`.
    Sub(Vec<f32>),
    SubFrom(Vec<f32>),
    Mul(Vec<f32>),
    /// `x / c`, and `c / x`.
    Div(Vec<f32>),
    DivInto(Vec<f32>),
    /// `Where(IsNaN(x), c, x)`.
    NanTo(Vec<f32>),
}

impl ColumnOp {
    /// Applies the op to the values of column `j` (one loop per op, which
    /// the compiler vectorises).
    fn apply(&self, j: usize, column: &mut [f32]) {
        let c = |v: &Vec<f32>| if v.len() == 1 { v[0] } else { v[j] };
        match self {
            ColumnOp::Add(v) => column.iter_mut().for_each(|x| *x += c(v)),
            ColumnOp::Sub(v) => column.iter_mut().for_each(|x| *x -= c(v)),
            ColumnOp::SubFrom(v) => column.iter_mut().for_each(|x| *x = c(v) - *x),
            ColumnOp::Mul(v) => column.iter_mut().for_each(|x| *x *= c(v)),
            ColumnOp::Div(v) => column.iter_mut().for_each(|x| *x /= c(v)),
            ColumnOp::DivInto(v) => column.iter_mut().for_each(|x| *x = c(v) / *x),
            ColumnOp::NanTo(v) => column.iter_mut().for_each(|x| *x = if x.is_nan() { c(v) } else { *x }),
        }
    }
}

/// A compiled graph.
#[derive(Debug)]
pub struct Graph {
    pub inputs: Vec<GraphInput>,
    pub steps: Vec<Step>,
    /// Constant values (initializers and folded nodes), by slot.
    pub constants: Vec<Option<Tensor>>,
    pub n_slots: usize,
    /// The slot of the score output.
    pub output: usize,
    /// Rows per pass for graphs with dense layers: a layer's output stays in
    /// the core's cache for the next layer.
    pub tile_rows: Option<usize>,
    /// Element-wise steps on the CPU run in row chunks of fewer elements
    /// than this ([`crate::model::CANDLE_PARALLEL_ELEMENTS`]; lower in tests).
    pub elementwise_limit: usize,
}

/// Whether every output row of `op` depends on the same row of its inputs
/// only (and the op runs as candle element-wise ops): such a step can run
/// in chunks of rows.
fn is_row_wise(op: &Op, rank: usize) -> bool {
    match op {
        Op::Unary(_)
        | Op::Binary(_)
        | Op::LeakyRelu { .. }
        | Op::IsNaN
        | Op::Where
        | Op::Pow { .. }
        | Op::Gelu { .. }
        | Op::BatchNormalization { .. } => true,
        // Along any axis but the rows'.
        Op::Softmax { axis, .. } => axis_index(*axis, rank).is_ok_and(|axis| axis != 0),
        _ => false,
    }
}

/// Whether `op` can run in row chunks (for the tests' count).
#[cfg(test)]
pub fn is_row_wise_op(op: &Op) -> bool {
    is_row_wise(op, 2)
}

/// Runs one step; a row-wise step on the CPU whose values reach `limit`
/// elements runs in chunks of rows below it.
fn run_step(
    op: &Op,
    inputs: &[Option<Tensor>],
    context: &RunContext<'_>,
    slots: &[Option<usize>],
    limit: usize,
) -> candle_core::Result<Vec<Option<Tensor>>> {
    let whole = || run_op(op, inputs, Some((context, slots)));
    let Some(first) = inputs.first().and_then(|v| v.as_ref()) else {
        return whole();
    };
    if !first.device().is_cpu() || first.rank() == 0 || !is_row_wise(op, first.rank()) {
        return whole();
    }
    // The broadcast shape of the inputs: the size of the step's values.
    let mut shape = first.shape().clone();
    for input in inputs.iter().flatten().skip(1) {
        shape = match shape.broadcast_shape_binary_op(input.shape(), "chunking") {
            Ok(shape) => shape,
            Err(_) => return whole(),
        };
    }
    let (rank, rows) = (shape.rank(), shape.dims()[0]);
    let per_row = shape.elem_count() / rows.max(1);
    if shape.elem_count() < limit || rows < 2 || per_row == 0 {
        return whole();
    }
    let chunk_rows = ((limit - 1) / per_row).max(1);
    let mut chunks: Vec<Vec<Option<Tensor>>> = Vec::new();
    for start in (0..rows).step_by(chunk_rows) {
        let len = chunk_rows.min(rows - start);
        // Inputs with the rows' dimension are cut; the others broadcast.
        let part = inputs
            .iter()
            .map(|value| match value {
                Some(t) if t.rank() == rank && t.dims()[0] == rows => t.narrow(0, start, len).map(Some),
                other => Ok(other.clone()),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        chunks.push(run_op(op, &part, None)?);
    }
    let n_outputs = chunks[0].len();
    (0..n_outputs)
        .map(|k| {
            let parts: Vec<Tensor> = chunks.iter().filter_map(|c| c[k].clone()).collect();
            match parts.len() == chunks.len() {
                true => Tensor::cat(&parts, 0).map(Some),
                false => Ok(None),
            }
        })
        .collect()
}

/// Rows a dense layer computes at a time: a 256-wide float32 layer of 256
/// rows is 256 KiB, in L2 for the next layer. (The 34-256-128-1 benchmark
/// MLP on 10M rows: 4.2-4.5 s at 256 rows, 4.5 s at 1,024, 4.6 s at 512.)
pub const DENSE_TILE_ROWS: usize = 256;

/// A tensor initializer as a candle tensor on `device`.
pub fn tensor_of(t: &TensorProto, device: &Device) -> Result<Tensor, String> {
    // Dimensions come from the file: each must be whole and their product
    // (that of the non-zero ones too: candle computes strides from them) fit
    // and match the values held, checked here before candle multiplies them.
    let mut dims = Vec::with_capacity(t.dims.len());
    let (mut count, mut nonzero) = (Some(1usize), Some(1usize));
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| format!("tensor `{}` has a negative dimension {d}", t.name))?;
        count = count.and_then(|c| c.checked_mul(d));
        nonzero = nonzero.and_then(|c| c.checked_mul(d.max(1)));
        dims.push(d);
    }
    let held = match &t.data {
        TensorData::F32(v) => v.len(),
        TensorData::F64(v) => v.len(),
        TensorData::I64(v) => v.len(),
        TensorData::Strings(v) => v.len(),
    };
    if nonzero.is_none() || count != Some(held) {
        return Err(format!(
            "tensor `{}` has dimensions {:?} but holds {held} values",
            t.name, t.dims
        ));
    }
    let result = match &t.data {
        TensorData::F32(v) => Tensor::from_slice(v, dims.as_slice(), device),
        TensorData::F64(v) => Tensor::from_slice(v, dims.as_slice(), device),
        TensorData::I64(v) => Tensor::from_slice(v, dims.as_slice(), device),
        TensorData::Strings(_) => return Err(format!("tensor `{}` holds strings", t.name)),
    };
    result.map_err(|e| format!("tensor `{}`: {e}", t.name))
}

/// The candle type an ONNX element type computes in.
pub fn dtype_of(t: ElemType) -> Option<DType> {
    match t {
        ElemType::Bool => Some(DType::U8),
        ElemType::Float | ElemType::Float16 | ElemType::Bfloat16 => Some(DType::F32),
        ElemType::Double => Some(DType::F64),
        t if t.is_integer() => Some(DType::I64),
        _ => None,
    }
}

impl Graph {
    /// Compiles the nodes `output` depends on. `inputs` are the graph inputs
    /// (name, width, dtype, rank 1) that features feed.
    pub fn compile(
        graph: &GraphProto,
        inputs: Vec<(String, usize, DType, bool)>,
        output: &str,
        opset: i64,
        ml_opset: i64,
        device: &Device,
    ) -> Result<Graph, NodeError> {
        let mut c = Compiler {
            device,
            opset,
            ml_opset,
            slots: HashMap::new(),
            constants: Vec::new(),
        };
        let graph_inputs: Vec<GraphInput> = inputs
            .into_iter()
            .map(|(name, width, dtype, rank1)| {
                let slot = c.slot(&name);
                GraphInput {
                    slot,
                    name,
                    width,
                    dtype,
                    rank1,
                    prelude: Vec::new(),
                    feeds: slot,
                    column_major: false,
                    block_only: false,
                }
            })
            .collect();
        for init in &graph.initializers {
            // An initializer that is also a graph input is a default that
            // features override: only the inputs lakescore feeds matter.
            if graph_inputs.iter().any(|i| i.name == init.name) {
                continue;
            }
            if matches!(init.data, TensorData::Strings(_)) {
                continue;
            }
            let tensor = tensor_of(init, device).map_err(|problem| NodeError {
                node: format!("initializer `{}`", init.name),
                problem,
            })?;
            let slot = c.slot(&init.name);
            c.constants[slot] = Some(tensor);
        }

        // The nodes the output needs, found backwards from it.
        let producer: HashMap<&str, usize> = graph
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let mut needed = HashSet::new();
        let mut stack = vec![output];
        while let Some(name) = stack.pop() {
            if let Some(&i) = producer.get(name)
                && needed.insert(i)
            {
                stack.extend(
                    graph.nodes[i]
                        .inputs
                        .iter()
                        .filter(|s| !s.is_empty())
                        .map(|s| s.as_str()),
                );
            }
        }

        // Nodes are stored in topological order (the ONNX rule); check it.
        let mut steps = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            if !needed.contains(&i) {
                continue;
            }
            let mut input_slots = Vec::with_capacity(node.inputs.len());
            for name in &node.inputs {
                if name.is_empty() {
                    input_slots.push(None);
                    continue;
                }
                let known = c.slots.contains_key(name.as_str());
                if !known {
                    let problem = if producer.contains_key(name.as_str()) {
                        format!("reads `{name}` before the node that writes it: the graph is not in topological order")
                    } else {
                        format!("reads `{name}`, which is no graph input, initializer or node output lakescore feeds")
                    };
                    return Err(NodeError::new(node, problem));
                }
                input_slots.push(Some(c.slot(name)));
            }
            let output_slots: Vec<usize> = node.outputs.iter().map(|o| c.slot(o)).collect();
            let Some(op) = compile_op(node, &input_slots, &mut c)? else {
                continue;
            };
            let step = Step {
                op,
                inputs: input_slots,
                outputs: output_slots,
                describe: describe_node(node),
            };
            // Constant folding: every input known now.
            let folded = !step.inputs.is_empty()
                && step.inputs.iter().all(|s| s.is_none() || c.constant(*s).is_some())
                && !matches!(step.op, Op::Ml(_));
            if folded {
                let values: Vec<Option<Tensor>> = step.inputs.iter().map(|s| c.constant(*s).cloned()).collect();
                let outputs = run_op(&step.op, &values, None).map_err(|e| NodeError::new(node, e.to_string()))?;
                for (slot, value) in step.outputs.iter().zip(outputs) {
                    c.constants[*slot] = value;
                }
                continue;
            }
            steps.push(step);
        }
        let Some(&output_slot) = c.slots.get(output) else {
            return Err(NodeError {
                node: format!("output `{output}`"),
                problem: "no node writes it".into(),
            });
        };
        let steps = fuse_dense_layers(steps, &c.constants, output_slot).map_err(|e| NodeError {
            node: "a dense layer".into(),
            problem: e.to_string(),
        })?;
        let mut graph_inputs = graph_inputs;
        let steps =
            fuse_input_preludes(steps, &c.constants, &mut graph_inputs, output_slot).map_err(|e| NodeError {
                node: "an input's element-wise ops".into(),
                problem: e.to_string(),
            })?;
        let tile_rows = steps
            .iter()
            .any(|s| matches!(s.op, Op::Dense(_)))
            .then_some(DENSE_TILE_ROWS);
        for input in graph_inputs.iter_mut() {
            let readers: Vec<&Op> = steps
                .iter()
                .filter(|s| s.inputs.contains(&Some(input.feeds)))
                .map(|s| &s.op)
                .collect();
            let only = |f: fn(&Op) -> bool| {
                !input.rank1 && input.feeds != output_slot && !readers.is_empty() && readers.iter().all(|op| f(op))
            };
            input.column_major = only(|op| matches!(op, Op::Dense(_)));
            // The block is whole only when the graph is not run in tiles.
            input.block_only = tile_rows.is_none()
                && input.dtype == DType::F32
                && input.prelude.is_empty()
                && only(|op| matches!(op, Op::Ml(ml) if matches!(**ml, MlOp::Trees(_))));
        }
        Ok(Graph {
            inputs: graph_inputs,
            steps,
            n_slots: c.slots.len(),
            constants: c.constants,
            output: output_slot,
            tile_rows,
            elementwise_limit: crate::model::CANDLE_PARALLEL_ELEMENTS,
        })
    }

    /// The range every output value falls in, when the op writing the
    /// output bounds it (a sigmoid, a softmax, a probability post transform).
    pub fn output_range(&self) -> Option<(f64, f64)> {
        let mut slot = self.output;
        // Look through ops that keep values as they are.
        for step in self.steps.iter().rev() {
            if !step.outputs.contains(&slot) {
                continue;
            }
            match &step.op {
                Op::Unary(Unary::Sigmoid) | Op::Softmax { .. } => return Some((0.0, 1.0)),
                Op::Ml(ml) if matches!(**ml, MlOp::ZipMap) => slot = step.inputs[0]?,
                Op::Ml(ml) => return ml.output_range(),
                Op::Identity | Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
                    slot = step.inputs[0]?
                }
                _ => return None,
            }
        }
        None
    }

    /// Runs the graph on feature-major `block` (`n_features` x `n_rows`, the
    /// graph inputs' features one after another), returning the output.
    pub fn run(&self, block: &[f64], n_rows: usize, device: &Device) -> candle_core::Result<Tensor> {
        // Tiles keep a CPU's layer outputs in its cache; a GPU takes the
        // block whole (each tile would be several kernel launches).
        match self.tile_rows {
            Some(tile) if n_rows > tile && device.is_cpu() => {
                let mut outputs = Vec::with_capacity(n_rows.div_ceil(tile));
                for start in (0..n_rows).step_by(tile) {
                    let rows = tile.min(n_rows - start);
                    outputs.push(self.run_rows(block, n_rows, start..start + rows, device)?);
                }
                Tensor::cat(&outputs, 0)
            }
            _ => self.run_rows(block, n_rows, 0..n_rows, device),
        }
    }

    /// Runs the graph on rows `rows` of the feature-major `block`.
    fn run_rows(
        &self,
        block: &[f64],
        n_rows: usize,
        rows: std::ops::Range<usize>,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut values: Vec<Option<Tensor>> = self.constants.clone();
        values.resize(self.n_slots, None);
        let mut feature = 0;
        let whole = rows.len() == n_rows;
        for input in &self.inputs {
            if input.block_only && whole {
                feature += input.width;
                continue;
            }
            // Feature-major f64 to row-major (rows, features) in the input's
            // type, in one pass: the element-wise ops and matrix products
            // after it run on contiguous rows.
            let columns = (feature..feature + input.width).map(|j| &block[j * n_rows..][rows.clone()]);
            feature += input.width;
            let shape: Vec<usize> = if input.rank1 {
                vec![rows.len()]
            } else {
                vec![rows.len(), input.width]
            };
            let tensor = match input.dtype {
                DType::F64 => Tensor::from_vec(interleave(columns, rows.len(), input.width, |x| x), shape, device)?,
                _ => {
                    // Column by column: convert, apply the prelude, then
                    // place the column in the rows.
                    let (n, width) = (rows.len(), input.width);
                    if input.column_major {
                        // Feature-major, handed over as its transposed view.
                        let mut out = Vec::with_capacity(n * width);
                        for (j, column) in columns.enumerate() {
                            let start = out.len();
                            out.extend(column.iter().map(|&x| x as f32));
                            for op in &input.prelude {
                                op.apply(j, &mut out[start..]);
                            }
                        }
                        Tensor::from_vec(out, (width, n), device)?.t()?
                    } else {
                        let mut out = vec![0f32; n * width];
                        let mut column_values = vec![0f32; n];
                        for (j, column) in columns.enumerate() {
                            for (v, &x) in column_values.iter_mut().zip(column) {
                                *v = x as f32;
                            }
                            for op in &input.prelude {
                                op.apply(j, &mut column_values);
                            }
                            for (r, &v) in column_values.iter().enumerate() {
                                out[r * width + j] = v;
                            }
                        }
                        Tensor::from_vec(out, shape, device)?
                    }
                }
            };
            values[input.feeds] = Some(tensor);
        }
        let context = RunContext {
            block: if whole { block } else { &[] },
            n_rows,
            inputs: &self.inputs,
            device,
        };
        for step in &self.steps {
            let inputs: Vec<Option<Tensor>> = step.inputs.iter().map(|s| s.and_then(|s| values[s].clone())).collect();
            let outputs = run_step(&step.op, &inputs, &context, &step.inputs, self.elementwise_limit)
                .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", step.describe)))?;
            for (slot, value) in step.outputs.iter().zip(outputs) {
                values[*slot] = value;
            }
        }
        values[self.output]
            .take()
            .ok_or_else(|| candle_core::Error::Msg("the graph produced no output".into()))
    }
}

/// `width` columns of `n_rows` values each, as one row-major vector.
fn interleave<'a, T: Copy + Default>(
    columns: impl Iterator<Item = &'a [f64]>,
    n_rows: usize,
    width: usize,
    convert: impl Fn(f64) -> T,
) -> Vec<T> {
    let mut out = vec![T::default(); n_rows * width];
    for (j, column) in columns.enumerate() {
        for (r, &x) in column.iter().enumerate() {
            out[r * width + j] = convert(x);
        }
    }
    out
}

/// What an ML op may use besides its input tensors: the feature block the
/// graph inputs were made from, so that a tree ensemble reading a graph
/// input directly reads the block without a copy.
pub struct RunContext<'a> {
    pub block: &'a [f64],
    pub n_rows: usize,
    pub inputs: &'a [GraphInput],
    pub device: &'a Device,
}

impl RunContext<'_> {
    /// The block's rows of `slot`'s features, when `slot` is a float32 graph input fed straight from the block.
    pub fn block_of(&self, slot: Option<usize>) -> Option<&[f64]> {
        let slot = slot?;
        if self.block.is_empty() {
            return None;
        }
        let mut start = 0;
        for input in self.inputs {
            if input.feeds == slot {
                return (input.dtype == DType::F32 && input.prelude.is_empty())
                    .then(|| &self.block[start * self.n_rows..(start + input.width) * self.n_rows]);
            }
            start += input.width;
        }
        None
    }
}

fn compile_op(node: &NodeProto, inputs: &[Option<usize>], c: &mut Compiler<'_>) -> Result<Option<Op>, NodeError> {
    let attrs = Attributes { node };
    let need_inputs = |n: usize| -> Result<(), NodeError> {
        if inputs.len() < n || inputs[..n].iter().any(|i| i.is_none()) {
            Err(NodeError::new(node, format!("needs {n} inputs, has {}", inputs.len())))
        } else {
            Ok(())
        }
    };
    let candle = |e: candle_core::Error| NodeError::new(node, e.to_string());
    match node.domain.as_str() {
        "" | "ai.onnx" => {}
        "ai.onnx.ml" => return MlOp::compile(node, inputs, c).map(|op| Some(Op::Ml(Box::new(op)))),
        other => {
            return Err(NodeError::new(
                node,
                format!(
                    "operator `{}` of domain `{other}` is not supported (lakescore runs the standard ONNX and \
                     ai.onnx.ml operators: {SUPPORTED_OPS})",
                    node.op_type
                ),
            ));
        }
    }
    if attrs
        .node
        .attributes
        .iter()
        .any(|a| a.has_graph || a.ref_attr_name.is_some())
    {
        return Err(NodeError::new(
            node,
            "has a subgraph attribute; lakescore runs no control flow",
        ));
    }
    let op = match node.op_type.as_str() {
        "Identity" | "Dropout" => Op::Identity,
        "Constant" => {
            let tensor = if let Some(t) = attrs.tensor("value") {
                tensor_of(t, c.device).map_err(|p| NodeError::new(node, p))?
            } else if let Some(a) = attrs.get("value_float") {
                Tensor::new(a.f.unwrap_or_default(), c.device).map_err(candle)?
            } else if let Some(a) = attrs.get("value_floats") {
                Tensor::new(a.floats.as_slice(), c.device).map_err(candle)?
            } else if let Some(a) = attrs.get("value_int") {
                Tensor::new(a.i.unwrap_or_default(), c.device).map_err(candle)?
            } else if let Some(a) = attrs.get("value_ints") {
                Tensor::new(a.ints.as_slice(), c.device).map_err(candle)?
            } else {
                return Err(NodeError::new(node, "a Constant without a numeric value"));
            };
            // A value, not a step.
            let slot = c.slot(&node.outputs[0]);
            c.constants[slot] = Some(tensor);
            return Ok(None);
        }
        "Relu" => Op::Unary(Unary::Relu),
        "Sigmoid" => Op::Unary(Unary::Sigmoid),
        "Tanh" => Op::Unary(Unary::Tanh),
        "Erf" => Op::Unary(Unary::Erf),
        "Neg" => Op::Unary(Unary::Neg),
        "Exp" => Op::Unary(Unary::Exp),
        "Log" => Op::Unary(Unary::Log),
        "Sqrt" => Op::Unary(Unary::Sqrt),
        "Abs" => Op::Unary(Unary::Abs),
        "Reciprocal" => Op::Unary(Unary::Reciprocal),
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "Pow" => {
            need_inputs(2)?;
            let exponent = c
                .constant(inputs[1])
                .filter(|t| t.elem_count() == 1)
                .ok_or_else(|| NodeError::new(node, "its exponent is not a constant scalar; lakescore needs one"))?;
            Op::Pow {
                exponent: exponent
                    .flatten_all()
                    .and_then(|t| t.to_dtype(DType::F64))
                    .and_then(|t| t.to_vec1::<f64>())
                    .map_err(candle)?[0],
            }
        }
        "IsNaN" => Op::IsNaN,
        "Where" => {
            need_inputs(3)?;
            Op::Where
        }
        "LeakyRelu" => Op::LeakyRelu {
            alpha: attrs.float("alpha", 0.01)? as f64,
        },
        "Gelu" => Op::Gelu {
            tanh: match attrs.string("approximate", "none")?.as_str() {
                "none" => false,
                "tanh" => true,
                other => return Err(NodeError::new(node, format!("unknown `approximate` value `{other}`"))),
            },
        },
        "Gemm" => {
            need_inputs(2)?;
            Op::Gemm {
                alpha: attrs.float("alpha", 1.0)? as f64,
                beta: attrs.float("beta", 1.0)? as f64,
                trans_a: attrs.int("transA", 0)? != 0,
                trans_b: attrs.int("transB", 0)? != 0,
            }
        }
        "MatMul" => {
            need_inputs(2)?;
            Op::MatMul
        }
        "Softmax" => Op::Softmax {
            axis: attrs.int("axis", if c.opset >= 13 { -1 } else { 1 })?,
            coerce_2d: c.opset < 13,
        },
        "Concat" => Op::Concat {
            axis: attrs
                .get("axis")
                .and_then(|a| a.i)
                .ok_or_else(|| NodeError::new(node, "Concat without an `axis`"))?,
        },
        "BatchNormalization" => {
            need_inputs(5)?;
            if attrs.int("training_mode", 0)? != 0 || node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                return Err(NodeError::new(
                    node,
                    "is in training mode; export the model in eval mode (`model.eval()`)",
                ));
            }
            Op::BatchNormalization {
                epsilon: attrs.float("epsilon", 1e-5)? as f64,
            }
        }
        "Cast" => {
            let to = ElemType::from_code(attrs.int("to", 1)?);
            Op::Cast {
                to: dtype_of(to).ok_or_else(|| {
                    NodeError::new(node, format!("casts to {to}, which lakescore does not compute in"))
                })?,
            }
        }
        "Reshape" => {
            need_inputs(2)?;
            Op::Reshape {
                allowzero: attrs.int("allowzero", 0)? != 0,
                shape: c.constant_ints(inputs[1]).map_err(candle)?,
            }
        }
        "Flatten" => Op::Flatten {
            axis: attrs.int("axis", 1)?,
        },
        "Unsqueeze" | "Squeeze" => {
            let axes = if c.opset >= 13 {
                match inputs.get(1).copied().flatten() {
                    Some(slot) => Some(c.constant_ints(Some(slot)).map_err(candle)?.ok_or_else(|| {
                        NodeError::new(
                            node,
                            "its `axes` input is computed at run time; lakescore needs a constant",
                        )
                    })?),
                    None => None,
                }
            } else {
                attrs.get("axes").map(|a| a.ints.clone())
            };
            if node.op_type == "Unsqueeze" {
                if axes.is_none() {
                    return Err(NodeError::new(node, "Unsqueeze without `axes`"));
                }
                Op::Unsqueeze { axes }
            } else {
                Op::Squeeze { axes }
            }
        }
        "Transpose" => Op::Transpose {
            perm: attrs.get("perm").map(|a| a.ints.iter().map(|&p| p as usize).collect()),
        },
        "Shape" => Op::Shape {
            start: attrs.int("start", 0)?,
            end: attrs.get("end").and_then(|a| a.i),
        },
        "Slice" => {
            let constant = |i: usize, what: &str| -> Result<Option<Vec<i64>>, NodeError> {
                match inputs.get(i).copied().flatten() {
                    None => Ok(None),
                    Some(slot) => c.constant_ints(Some(slot)).map_err(candle)?.map(Some).ok_or_else(|| {
                        NodeError::new(
                            node,
                            format!("its `{what}` input is computed at run time; lakescore needs a constant"),
                        )
                    }),
                }
            };
            let (starts, ends, axes, steps) = if c.opset >= 10 {
                need_inputs(3)?;
                (
                    constant(1, "starts")?.unwrap_or_default(),
                    constant(2, "ends")?.unwrap_or_default(),
                    constant(3, "axes")?,
                    constant(4, "steps")?,
                )
            } else {
                (
                    attrs.ints("starts"),
                    attrs.ints("ends"),
                    attrs.get("axes").map(|a| a.ints.clone()),
                    None,
                )
            };
            if starts.len() != ends.len() || axes.as_ref().is_some_and(|a| a.len() != starts.len()) {
                return Err(NodeError::new(node, "`starts`, `ends` and `axes` differ in length"));
            }
            if let Some(steps) = &steps
                && (steps.len() != starts.len() || steps.iter().any(|&s| s <= 0))
            {
                return Err(NodeError::new(
                    node,
                    "only positive `steps`, one per axis, are supported",
                ));
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            }
        }
        "Gather" => {
            need_inputs(2)?;
            Op::Gather {
                axis: attrs.int("axis", 0)?,
            }
        }
        other => {
            return Err(NodeError::new(
                node,
                format!("operator `{other}` is not supported by lakescore (supported: {SUPPORTED_OPS})"),
            ));
        }
    };
    Ok(Some(op))
}

fn axis_index(axis: i64, rank: usize) -> candle_core::Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        candle_core::bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

fn input(values: &[Option<Tensor>], i: usize) -> candle_core::Result<&Tensor> {
    values
        .get(i)
        .and_then(|v| v.as_ref())
        .ok_or_else(|| candle_core::Error::Msg(format!("input {i} is missing")))
}

/// Compiles each `Gemm` whose weights and bias are constants (and whose
/// `A` is not transposed) into a [`Dense`] layer, taking in the `Relu` that
/// alone reads its output.
fn fuse_dense_layers(steps: Vec<Step>, constants: &[Option<Tensor>], output: usize) -> candle_core::Result<Vec<Step>> {
    let constant = |slot: Option<usize>| slot.and_then(|s| constants.get(s)).and_then(|c| c.as_ref());
    let mut readers = vec![0usize; constants.len().max(output + 1)];
    for step in &steps {
        for slot in step.inputs.iter().flatten() {
            if *slot >= readers.len() {
                readers.resize(slot + 1, 0);
            }
            readers[*slot] += 1;
        }
    }
    let mut fused: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        if let Op::Unary(Unary::Relu) = step.op
            && let Some(Step {
                op: Op::Dense(dense),
                outputs,
                ..
            }) = fused.last_mut()
            && step.inputs.first() == Some(&Some(outputs[0]))
            && readers.get(outputs[0]) == Some(&1)
            && outputs[0] != output
            && !dense.relu
        {
            dense.relu = true;
            outputs[0] = step.outputs[0];
            continue;
        }
        let Op::Gemm {
            alpha,
            beta,
            trans_a: false,
            trans_b,
        } = step.op
        else {
            fused.push(step);
            continue;
        };
        let (Some(w), bias) = (
            constant(step.inputs.get(1).copied().flatten()),
            step.inputs.get(2).copied().flatten(),
        ) else {
            fused.push(step);
            continue;
        };
        let bias = match bias {
            Some(slot) => match constant(Some(slot)) {
                Some(b) => Some(b),
                None => {
                    fused.push(step);
                    continue;
                }
            },
            None => None,
        };
        // Float32 weights only: a double graph keeps its double Gemm.
        if w.rank() != 2 || w.dtype() != DType::F32 {
            fused.push(step);
            continue;
        }
        // With beta 0 the bias is not read (a NaN there must not leak in).
        let bias = if beta == 0.0 { None } else { bias };
        let w = if trans_b { w.t()? } else { w.clone() };
        let (k, n) = w.dims2()?;
        let weights: Vec<f32> = w
            .to_dtype(DType::F32)?
            .affine(alpha, 0.0)?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        let bias: Vec<f32> = match bias {
            None => vec![0.0; n],
            Some(b) => {
                let b: Vec<f32> = b.to_dtype(DType::F32)?.affine(beta, 0.0)?.flatten_all()?.to_vec1()?;
                match b.len() {
                    1 => vec![b[0]; n],
                    l if l == n => b,
                    // A bias per row: not a layer.
                    _ => {
                        fused.push(step);
                        continue;
                    }
                }
            }
        };
        fused.push(Step {
            op: Op::Dense(Box::new(Dense::new(weights, bias, k, n, false))),
            inputs: vec![step.inputs[0]],
            outputs: step.outputs,
            describe: step.describe,
        });
    }
    Ok(fused)
}

/// Folds the per-column element-wise ops that start at each float32
/// `[N, width]` graph input (adding, subtracting, multiplying or dividing by
/// a constant scalar or per-column vector; replacing NaN by a constant
/// through `IsNaN` and `Where`) into the input's conversion from the block:
/// one pass over the values instead of one candle op (and tensor) each.
/// Each op must be the only reader of the value before it.
fn fuse_input_preludes(
    mut steps: Vec<Step>,
    constants: &[Option<Tensor>],
    inputs: &mut [GraphInput],
    output: usize,
) -> candle_core::Result<Vec<Step>> {
    let readers = |steps: &[Step], slot: usize| -> Vec<usize> {
        (0..steps.len())
            .filter(|&i| steps[i].inputs.iter().flatten().any(|&s| s == slot))
            .collect()
    };
    for input in inputs.iter_mut() {
        if input.dtype != DType::F32 || input.rank1 {
            continue;
        }
        let width = input.width;
        // A constant usable per column: one value, or `width` along the last axis.
        let per_column = |slot: Option<usize>| -> candle_core::Result<Option<Vec<f32>>> {
            let Some(t) = slot.and_then(|s| constants.get(s)).and_then(|c| c.as_ref()) else {
                return Ok(None);
            };
            let n = t.elem_count();
            let last_axis_only = t.dims().iter().rev().skip(1).all(|&d| d == 1);
            if n == 1 || (n == width && last_axis_only) {
                Ok(Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?))
            } else {
                Ok(None)
            }
        };
        let mut slot = input.slot;
        loop {
            if slot == output {
                break;
            }
            let readers_now = readers(&steps, slot);
            // x op c, or c op x.
            if let [i] = readers_now[..]
                && let Op::Binary(kind) = steps[i].op
                && steps[i].inputs.len() == 2
            {
                let (a, b) = (steps[i].inputs[0], steps[i].inputs[1]);
                let (other, reversed) = if a == Some(slot) { (b, false) } else { (a, true) };
                if (a == Some(slot)) == (b == Some(slot)) {
                    break;
                }
                let Some(c) = per_column(other)? else { break };
                input.prelude.push(match (kind, reversed) {
                    (Binary::Add, _) => ColumnOp::Add(c),
                    (Binary::Mul, _) => ColumnOp::Mul(c),
                    (Binary::Sub, false) => ColumnOp::Sub(c),
                    (Binary::Sub, true) => ColumnOp::SubFrom(c),
                    (Binary::Div, false) => ColumnOp::Div(c),
                    (Binary::Div, true) => ColumnOp::DivInto(c),
                });
                slot = steps[i].outputs[0];
                steps.remove(i);
                continue;
            }
            // Where(IsNaN(x) [-> Cast], c, x).
            if let [i, j] = readers_now[..] {
                let (is_nan, where_) = if matches!(steps[i].op, Op::IsNaN) {
                    (i, j)
                } else {
                    (j, i)
                };
                if !matches!(steps[is_nan].op, Op::IsNaN) || !matches!(steps[where_].op, Op::Where) {
                    break;
                }
                let mut condition = steps[is_nan].outputs[0];
                let mut cast = None;
                if let [k] = readers(&steps, condition)[..]
                    && k != where_
                    && matches!(steps[k].op, Op::Cast { .. } | Op::Identity)
                {
                    cast = Some(k);
                    condition = steps[k].outputs[0];
                }
                let w = &steps[where_];
                if condition == output
                    || readers(&steps, condition) != [where_]
                    || w.inputs.first() != Some(&Some(condition))
                    || w.inputs.get(2) != Some(&Some(slot))
                {
                    break;
                }
                let Some(c) = per_column(w.inputs.get(1).copied().flatten())? else {
                    break;
                };
                input.prelude.push(ColumnOp::NanTo(c));
                slot = w.outputs[0];
                let mut gone = vec![is_nan, where_];
                gone.extend(cast);
                gone.sort_unstable();
                for g in gone.into_iter().rev() {
                    steps.remove(g);
                }
                continue;
            }
            break;
        }
        input.feeds = slot;
    }
    Ok(steps)
}

/// Runs one op. `context` (absent when folding constants) gives ML ops the
/// feature block.
pub fn run_op(
    op: &Op,
    values: &[Option<Tensor>],
    context: Option<(&RunContext<'_>, &[Option<usize>])>,
) -> candle_core::Result<Vec<Option<Tensor>>> {
    let x = || input(values, 0);
    let one = |t: Tensor| Ok(vec![Some(t)]);
    match op {
        Op::Identity => one(x()?.clone()),
        Op::Unary(u) => {
            let x = x()?;
            one(match u {
                Unary::Relu => x.relu()?,
                Unary::Sigmoid => sigmoid(x)?,
                Unary::Tanh => x.tanh()?,
                Unary::Erf => x.erf()?,
                Unary::Neg => x.neg()?,
                Unary::Exp => x.exp()?,
                Unary::Log => x.log()?,
                Unary::Sqrt => x.sqrt()?,
                Unary::Abs => x.abs()?,
                Unary::Reciprocal => x.recip()?,
            })
        }
        Op::Binary(b) => {
            let (a, b2) = (x()?, input(values, 1)?);
            let b2 = if b2.dtype() != a.dtype() {
                b2.to_dtype(a.dtype())?
            } else {
                b2.clone()
            };
            one(match b {
                Binary::Add => a.broadcast_add(&b2)?,
                Binary::Sub => a.broadcast_sub(&b2)?,
                Binary::Mul => a.broadcast_mul(&b2)?,
                Binary::Div => a.broadcast_div(&b2)?,
            })
        }
        Op::LeakyRelu { alpha } => {
            let x = x()?;
            // max(x, 0) + alpha * min(x, 0)
            let positive = x.relu()?;
            let negative = x.sub(&positive)?;
            one(positive.add(&negative.affine(*alpha, 0.0)?)?)
        }
        Op::IsNaN => {
            let x = x()?;
            one(x.ne(x)?)
        }
        Op::Where => {
            let (condition, a, b) = (x()?, input(values, 1)?, input(values, 2)?);
            let dtype = a.dtype();
            let b = if b.dtype() == dtype {
                b.clone()
            } else {
                b.to_dtype(dtype)?
            };
            let shape = condition.shape().broadcast_shape_binary_op(a.shape(), "Where")?;
            let shape = shape.broadcast_shape_binary_op(b.shape(), "Where")?;
            // Booleans are u8 (candle's comparisons); other conditions are
            // true where not zero. Broadcast views, no copies.
            let condition = match condition.dtype() {
                DType::U8 => condition.clone(),
                _ => condition.ne(0.0)?,
            };
            let view = |t: &Tensor| {
                if t.shape() == &shape {
                    Ok(t.clone())
                } else {
                    t.broadcast_as(&shape)
                }
            };
            one(view(&condition)?.where_cond(&view(a)?, &view(&b)?)?)
        }
        Op::Pow { exponent } => one(if *exponent == 2.0 {
            x()?.sqr()?
        } else {
            x()?.powf(*exponent)?
        }),
        Op::Gelu { tanh } => one(if *tanh { x()?.gelu()? } else { x()?.gelu_erf()? }),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let a = x()?;
            let b = input(values, 1)?;
            let a = if *trans_a { a.t()? } else { a.clone() };
            let b = if *trans_b { b.t()? } else { b.clone() };
            let mut y = a.matmul(&b)?;
            if *alpha != 1.0 {
                y = y.affine(*alpha, 0.0)?;
            }
            if let Some(c) = values.get(2).and_then(|v| v.as_ref()) {
                let c = if *beta != 1.0 { c.affine(*beta, 0.0)? } else { c.clone() };
                y = y.broadcast_add(&c)?;
            }
            one(y)
        }
        Op::MatMul => {
            let (a, b) = (x()?, input(values, 1)?);
            one(match (a.rank(), b.rank()) {
                (2, 2) => a.matmul(b)?,
                (_, 2) if a.rank() > 2 => {
                    let dims = a.dims().to_vec();
                    let k = dims[dims.len() - 1];
                    let flat = a.reshape(((), k))?.matmul(b)?;
                    let mut out = dims[..dims.len() - 1].to_vec();
                    out.push(b.dim(1)?);
                    flat.reshape(out)?
                }
                (1, 2) => a.unsqueeze(0)?.matmul(b)?.squeeze(0)?,
                (2, 1) => a.matmul(&b.unsqueeze(1)?)?.squeeze(1)?,
                _ => a.broadcast_matmul(b)?,
            })
        }
        Op::Softmax { axis, coerce_2d } => {
            let x = x()?;
            let rank = x.rank();
            let axis = axis_index(*axis, rank)?;
            if *coerce_2d && axis + 1 != rank {
                let dims = x.dims().to_vec();
                let rows: usize = dims[..axis].iter().product();
                let flat = x.reshape((rows, ()))?;
                one(softmax(&flat, 1)?.reshape(dims)?)
            } else {
                one(softmax(x, axis)?)
            }
        }
        Op::Concat { axis } => {
            let parts: Vec<Tensor> = values.iter().flatten().cloned().collect();
            let Some(first) = parts.first() else {
                candle_core::bail!("Concat of nothing");
            };
            let axis = axis_index(*axis, first.rank())?;
            let dtype = first.dtype();
            let parts = parts
                .into_iter()
                .map(|p| if p.dtype() == dtype { Ok(p) } else { p.to_dtype(dtype) })
                .collect::<candle_core::Result<Vec<_>>>()?;
            one(Tensor::cat(&parts, axis)?)
        }
        Op::BatchNormalization { epsilon } => {
            let x = x()?;
            let (scale, bias, mean, var) = (
                input(values, 1)?,
                input(values, 2)?,
                input(values, 3)?,
                input(values, 4)?,
            );
            if x.rank() < 2 {
                candle_core::bail!("BatchNormalization needs (N, C, ...) input, has rank {}", x.rank());
            }
            // Channels are dimension 1: shape the parameters (C, 1, ...).
            let mut shape = vec![1usize; x.rank()];
            shape[1] = scale.elem_count();
            let r = |t: &Tensor| t.reshape(shape.clone())?.to_dtype(x.dtype());
            let inv_std = var.affine(1.0, *epsilon)?.sqrt()?.recip()?;
            let y = x
                .broadcast_sub(&r(mean)?)?
                .broadcast_mul(&r(&inv_std.mul(scale)?)?)?
                .broadcast_add(&r(bias)?)?;
            one(y)
        }
        // To bool: `x != 0` (NaN is true), not a truncation.
        Op::Cast { to: DType::U8 } if x()?.dtype() != DType::U8 => one(x()?.ne(0.0)?),
        Op::Cast { to } => one(x()?.to_dtype(*to)?),
        Op::Reshape { allowzero, shape } => {
            let x = x()?;
            let target = match shape {
                Some(s) => s.clone(),
                None => input(values, 1)?.to_dtype(DType::I64)?.to_vec1::<i64>()?,
            };
            let mut dims = Vec::with_capacity(target.len());
            let mut hole = None;
            for (i, &d) in target.iter().enumerate() {
                match d {
                    0 if !allowzero => dims.push(x.dim(i)?),
                    -1 => {
                        hole = Some(i);
                        dims.push(1);
                    }
                    d if d >= 0 => dims.push(d as usize),
                    d => candle_core::bail!("invalid reshape dimension {d}"),
                }
            }
            // The target shape may come from the file: its product is
            // checked here, before candle multiplies it out.
            let product = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if let Some(h) = hole {
                let known = product(&dims).unwrap_or(usize::MAX);
                if known == 0 {
                    candle_core::bail!("cannot infer a -1 dimension next to a zero one");
                }
                dims[h] = x.elem_count() / known;
            }
            if product(&dims) != Some(x.elem_count())
                || product(&dims.iter().map(|&d| d.max(1)).collect::<Vec<_>>()).is_none()
            {
                candle_core::bail!("cannot reshape {:?} to {dims:?}", x.dims());
            }
            one(x.reshape(dims)?)
        }
        Op::Flatten { axis } => {
            let x = x()?;
            let rank = x.rank() as i64;
            let axis = if *axis < 0 { axis + rank } else { *axis };
            if !(0..=rank).contains(&axis) {
                candle_core::bail!("Flatten axis {axis} out of range for rank {rank}");
            }
            let rows: usize = x.dims()[..axis as usize].iter().product();
            one(x.reshape((rows, ()))?)
        }
        Op::Unsqueeze { axes } => {
            let mut x = x()?.clone();
            let mut axes: Vec<i64> = axes.clone().unwrap_or_default();
            let out_rank = (x.rank() + axes.len()) as i64;
            for a in axes.iter_mut() {
                if *a < 0 {
                    *a += out_rank;
                }
            }
            axes.sort_unstable();
            for a in axes {
                x = x.unsqueeze(a as usize)?;
            }
            one(x)
        }
        Op::Squeeze { axes } => {
            let x = x()?;
            let rank = x.rank();
            let mut axes: Vec<usize> = match axes {
                Some(a) => a
                    .iter()
                    .map(|&a| axis_index(a, rank))
                    .collect::<candle_core::Result<_>>()?,
                None => (0..rank).filter(|&d| x.dims()[d] == 1).collect(),
            };
            axes.sort_unstable();
            let mut y = x.clone();
            for a in axes.into_iter().rev() {
                if y.dim(a)? != 1 {
                    candle_core::bail!("cannot squeeze dimension {a} of size {}", y.dim(a)?);
                }
                y = y.squeeze(a)?;
            }
            one(y)
        }
        Op::Transpose { perm } => {
            let x = x()?;
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..x.rank()).rev().collect());
            one(x.permute(perm)?)
        }
        Op::Shape { start, end } => {
            let x = x()?;
            let rank = x.rank() as i64;
            let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(rank)));
            let dims: Vec<i64> = x.dims()[s..e.max(s)].iter().map(|&d| d as i64).collect();
            one(Tensor::new(dims.as_slice(), x.device())?)
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            let mut y = x()?.clone();
            let rank = y.rank();
            for (k, (&start, &end)) in starts.iter().zip(ends).enumerate() {
                let axis = match axes {
                    Some(a) => axis_index(a[k], rank)?,
                    None => k,
                };
                let dim = y.dim(axis)? as i64;
                let clamp = |v: i64| (if v < 0 { v.saturating_add(dim) } else { v }).clamp(0, dim) as usize;
                let (s, e) = (clamp(start), clamp(end));
                let step = steps.as_ref().map_or(1, |s| s[k]) as usize;
                if e <= s {
                    y = y.narrow(axis, 0, 0)?;
                } else if step == 1 {
                    y = y.narrow(axis, s, e - s)?;
                } else {
                    let idx: Vec<u32> = (s..e).step_by(step).map(|i| i as u32).collect();
                    y = y.index_select(&Tensor::new(idx.as_slice(), y.device())?, axis)?;
                }
            }
            one(y)
        }
        Op::Gather { axis } => {
            let (data, indices) = (x()?, input(values, 1)?);
            let axis = axis_index(*axis, data.rank())?;
            let n = data.dim(axis)? as i64;
            let idx: Vec<i64> = indices.flatten_all()?.to_dtype(DType::I64)?.to_vec1()?;
            let idx: Vec<u32> = idx
                .iter()
                .map(|&i| {
                    let i = if i < 0 { i + n } else { i };
                    if (0..n).contains(&i) {
                        Ok(i as u32)
                    } else {
                        Err(candle_core::Error::Msg(format!("Gather index {i} out of range")))
                    }
                })
                .collect::<candle_core::Result<_>>()?;
            let picked = data.index_select(&Tensor::new(idx.as_slice(), data.device())?, axis)?;
            // The output has the indices' shape in place of the axis.
            let mut dims = data.dims()[..axis].to_vec();
            dims.extend(indices.dims());
            dims.extend(&data.dims()[axis + 1..]);
            one(picked.reshape(dims)?)
        }
        Op::Dense(dense) => {
            let x = x()?;
            let x = if x.dtype() == DType::F32 {
                x.clone()
            } else {
                x.to_dtype(DType::F32)?
            };
            one(dense.forward(&x)?)
        }
        Op::Ml(ml) => {
            let Some((context, slots)) = context else {
                candle_core::bail!("ML operators are not folded");
            };
            ml.run(
                values,
                context.block_of(slots.first().copied().flatten()),
                context.n_rows,
                context.device,
            )
        }
    }
    .map(|outputs: Vec<Option<Tensor>>| outputs)
}
