//! What compiling an ONNX node needs, whichever compiler takes it (the
//! neural operators in [`super::graph`], the ONNX-ML ones in [`super::ml`]):
//! its attributes, looked up with errors that name the node, and the graph's
//! values known so far (slots and folded constants).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::proto::{AttributeProto, NodeProto, TensorData, TensorProto};

/// What is wrong with a node, named so that a user can find it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeError {
    /// `node `name` (OpType)`, or the value's name for graph-level problems.
    pub node: String,
    pub problem: String,
}

impl NodeError {
    pub fn new(node: &NodeProto, problem: impl Into<String>) -> NodeError {
        NodeError {
            node: describe_node(node),
            problem: problem.into(),
        }
    }
}

pub fn describe_node(node: &NodeProto) -> String {
    let domain = match node.domain.as_str() {
        "" | "ai.onnx" => String::new(),
        d => format!("{d}."),
    };
    if node.name.is_empty() {
        format!(
            "the {domain}{} node writing `{}`",
            node.op_type,
            node.outputs.join("`, `")
        )
    } else {
        format!("node `{}` ({domain}{})", node.name, node.op_type)
    }
}

/// The operators lakescore runs, for error messages.
pub const SUPPORTED_OPS: &str = "Abs, Add, BatchNormalization, Cast, Concat, Constant, Div, Dropout, Erf, Exp, \
     Flatten, Gather, Gelu, Gemm, Identity, IsNaN, LeakyRelu, Log, MatMul, Mul, Neg, Pow, Reciprocal, Relu, Reshape, \
     Shape, Sigmoid, Slice, Softmax, Sqrt, Squeeze, Sub, Tanh, Transpose, Unsqueeze, Where; ai.onnx.ml: ArrayFeatureExtractor, \
     Binarizer, Imputer, LinearClassifier, LinearRegressor, Normalizer, Scaler, TreeEnsemble, \
     TreeEnsembleClassifier, TreeEnsembleRegressor, ZipMap";

/// A node's attributes, looked up by name with errors that name the node.
pub struct Attributes<'a> {
    pub node: &'a NodeProto,
}

impl<'a> Attributes<'a> {
    pub fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attributes.iter().find(|a| a.name == name)
    }

    pub fn error(&self, problem: impl Into<String>) -> NodeError {
        NodeError::new(self.node, problem)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64, NodeError> {
        match self.get(name) {
            None => Ok(default),
            Some(a) => {
                a.i.ok_or_else(|| self.error(format!("attribute `{name}` is not an integer")))
            }
        }
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32, NodeError> {
        match self.get(name) {
            None => Ok(default),
            Some(a) => {
                a.f.ok_or_else(|| self.error(format!("attribute `{name}` is not a float")))
            }
        }
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String, NodeError> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(a) => {
                a.s.as_ref()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .ok_or_else(|| self.error(format!("attribute `{name}` is not a string")))
            }
        }
    }

    pub fn ints(&self, name: &str) -> Vec<i64> {
        self.get(name).map(|a| a.ints.clone()).unwrap_or_default()
    }

    pub fn floats(&self, name: &str) -> Vec<f32> {
        self.get(name).map(|a| a.floats.clone()).unwrap_or_default()
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|a| {
                a.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A list of numbers given as `<name>` (floats) or `<name>_as_tensor`
    /// (a tensor, float or double): in f64, with whether it was double.
    pub fn numbers(&self, name: &str) -> Result<Option<(Vec<f64>, bool)>, NodeError> {
        let tensor_name = format!("{name}_as_tensor");
        if let Some(a) = self.get(&tensor_name) {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| self.error(format!("attribute `{tensor_name}` is not a tensor")))?;
            let values = t
                .data
                .to_f64()
                .ok_or_else(|| self.error(format!("attribute `{tensor_name}` holds strings")))?;
            if self.get(name).is_some() {
                return Err(self.error(format!("both `{name}` and `{tensor_name}` are given")));
            }
            return Ok(Some((values, matches!(t.data, TensorData::F64(_)))));
        }
        Ok(self
            .get(name)
            .map(|a| (a.floats.iter().map(|&v| v as f64).collect(), false)))
    }

    pub fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
}

/// Everything compilation needs to know about the graph's values.
pub struct Compiler<'a> {
    pub device: &'a Device,
    pub opset: i64,
    pub ml_opset: i64,
    pub slots: HashMap<String, usize>,
    pub constants: Vec<Option<Tensor>>,
}

impl Compiler<'_> {
    pub fn constant(&self, slot: Option<usize>) -> Option<&Tensor> {
        slot.and_then(|s| self.constants.get(s)).and_then(|c| c.as_ref())
    }

    pub(super) fn slot(&mut self, name: &str) -> usize {
        let n = self.slots.len();
        let slot = *self.slots.entry(name.to_string()).or_insert(n);
        if self.constants.len() <= slot {
            self.constants.resize(slot + 1, None);
        }
        slot
    }

    /// A constant integer list input (axes, shapes).
    pub(super) fn constant_ints(&self, slot: Option<usize>) -> Result<Option<Vec<i64>>, candle_core::Error> {
        match self.constant(slot) {
            Some(t) => Ok(Some(t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?)),
            None => Ok(None),
        }
    }
}
