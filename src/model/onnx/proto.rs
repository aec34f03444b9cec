//! The ONNX protobuf messages lakescore reads, decoded straight from the
//! wire format (no code generator, no `protoc` in the build): only the
//! fields inference needs; unknown fields are skipped as protobuf requires.
//!
//! Field numbers are those of `onnx/onnx.proto3` (ONNX 1.17).

use std::collections::BTreeMap;

/// What is wrong with the bytes, and where (the chain of messages and fields).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub at: String,
    pub problem: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at {})", self.problem, self.at)
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// One field as it sits on the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Walks the fields of one message.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], message: &'static str) -> Reader<'a> {
        Reader { bytes, pos: 0, message }
    }

    fn error(&self, problem: impl Into<String>) -> DecodeError {
        DecodeError {
            at: format!("{} byte {}", self.message, self.pos),
            problem: problem.into(),
        }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(self.error("the message ends inside a number"));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("a number runs past 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() - self.pos < n {
            return Err(self.error(format!(
                "a field of {n} bytes runs past the end of its message ({} bytes left): the file is truncated or not ONNX",
                self.bytes.len() - self.pos
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next field, or `None` at the end of the message.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>> {
        if self.pos >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| self.error("a field length overflows"))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            other => return Err(self.error(format!("wire type {other} of field {field} is not one ONNX uses"))),
        };
        if field == 0 {
            return Err(self.error("field number 0: the bytes are not a protobuf message"));
        }
        Ok(Some((field, wire)))
    }
}

fn expect_bytes<'a>(wire: Wire<'a>, message: &'static str, field: &str) -> Result<&'a [u8]> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        _ => Err(DecodeError {
            at: format!("{message}.{field}"),
            problem: "expected a length-delimited field".into(),
        }),
    }
}

fn expect_varint(wire: Wire<'_>, message: &'static str, field: &str) -> Result<u64> {
    match wire {
        Wire::Varint(v) => Ok(v),
        _ => Err(DecodeError {
            at: format!("{message}.{field}"),
            problem: "expected a varint field".into(),
        }),
    }
}

fn string(wire: Wire<'_>, message: &'static str, field: &str) -> Result<String> {
    let bytes = expect_bytes(wire, message, field)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError {
        at: format!("{message}.{field}"),
        problem: "a string is not UTF-8".into(),
    })
}

/// Repeated varints, packed (one length-delimited run) or not.
fn push_varints(out: &mut Vec<i64>, wire: Wire<'_>, message: &'static str) -> Result<()> {
    match wire {
        Wire::Varint(v) => out.push(v as i64),
        Wire::Bytes(b) => {
            let mut r = Reader::new(b, message);
            while r.pos < b.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => {
            return Err(DecodeError {
                at: message.into(),
                problem: "expected varints".into(),
            });
        }
    }
    Ok(())
}

fn push_f32s(out: &mut Vec<f32>, wire: Wire<'_>, message: &'static str) -> Result<()> {
    match wire {
        Wire::Fixed32(v) => out.push(f32::from_bits(v)),
        Wire::Bytes(b) if b.len() % 4 == 0 => {
            out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())))
        }
        _ => {
            return Err(DecodeError {
                at: message.into(),
                problem: "expected float32 values".into(),
            });
        }
    }
    Ok(())
}

fn push_f64s(out: &mut Vec<f64>, wire: Wire<'_>, message: &'static str) -> Result<()> {
    match wire {
        Wire::Fixed64(v) => out.push(f64::from_bits(v)),
        Wire::Bytes(b) if b.len() % 8 == 0 => {
            out.extend(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())))
        }
        _ => {
            return Err(DecodeError {
                at: message.into(),
                problem: "expected float64 values".into(),
            });
        }
    }
    Ok(())
}

/// `ModelProto`.
#[derive(Debug, Clone, Default)]
pub struct ModelProto {
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub model_version: i64,
    pub graph: GraphProto,
    /// Domain (`""` is the default `ai.onnx`) -> opset version.
    pub opsets: BTreeMap<String, i64>,
    pub metadata: BTreeMap<String, String>,
    /// Names of the model-local functions (which lakescore does not run).
    pub functions: Vec<String>,
}

/// `GraphProto`.
#[derive(Debug, Clone, Default)]
pub struct GraphProto {
    pub name: String,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub has_sparse_initializers: bool,
}

/// `NodeProto`.
#[derive(Debug, Clone, Default)]
pub struct NodeProto {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<AttributeProto>,
}

/// `AttributeProto`: the value fields that were set.
#[derive(Debug, Clone, Default)]
pub struct AttributeProto {
    pub name: String,
    pub f: Option<f32>,
    pub i: Option<i64>,
    pub s: Option<Vec<u8>>,
    pub t: Option<TensorProto>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
    pub strings: Vec<Vec<u8>>,
    /// A graph-valued attribute (If, Loop, Scan): lakescore runs none.
    pub has_graph: bool,
    /// `ref_attr_name`, only inside functions.
    pub ref_attr_name: Option<String>,
}

/// `TensorProto.DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    Float,
    Uint8,
    Int8,
    Uint16,
    Int16,
    Int32,
    Int64,
    String,
    Bool,
    Float16,
    Double,
    Uint32,
    Uint64,
    Bfloat16,
    Other(i64),
}

impl ElemType {
    pub fn from_code(code: i64) -> ElemType {
        match code {
            1 => ElemType::Float,
            2 => ElemType::Uint8,
            3 => ElemType::Int8,
            4 => ElemType::Uint16,
            5 => ElemType::Int16,
            6 => ElemType::Int32,
            7 => ElemType::Int64,
            8 => ElemType::String,
            9 => ElemType::Bool,
            10 => ElemType::Float16,
            11 => ElemType::Double,
            12 => ElemType::Uint32,
            13 => ElemType::Uint64,
            16 => ElemType::Bfloat16,
            other => ElemType::Other(other),
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            ElemType::Uint8
                | ElemType::Int8
                | ElemType::Uint16
                | ElemType::Int16
                | ElemType::Int32
                | ElemType::Int64
                | ElemType::Bool
                | ElemType::Uint32
                | ElemType::Uint64
        )
    }
}

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElemType::Other(code) => write!(f, "data type {code}"),
            other => write!(f, "{}", format!("{other:?}").to_lowercase()),
        }
    }
}

/// A tensor's values, widened to the three kinds inference computes in.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Every integer type and bool.
    I64(Vec<i64>),
    Strings(Vec<Vec<u8>>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Strings(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f64 (strings: none).
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        match self {
            TensorData::F32(v) => Some(v.iter().map(|&x| x as f64).collect()),
            TensorData::F64(v) => Some(v.clone()),
            TensorData::I64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            TensorData::Strings(_) => None,
        }
    }
}

/// `TensorProto`, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorProto {
    pub name: String,
    pub dims: Vec<i64>,
    pub elem_type: ElemType,
    pub data: TensorData,
}

impl Default for TensorProto {
    fn default() -> Self {
        TensorProto {
            name: String::new(),
            dims: Vec::new(),
            elem_type: ElemType::Float,
            data: TensorData::F32(Vec::new()),
        }
    }
}

/// `ValueInfoProto`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub kind: TypeKind,
}

/// `TypeProto`, for the kinds graph inputs and outputs take.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum TypeKind {
    Tensor {
        elem_type: ElemType,
        /// `None` when the shape is not given; each dimension a size or a
        /// symbolic name (`None` for unknown).
        shape: Option<Vec<Dim>>,
    },
    Sequence(Box<TypeKind>),
    Map {
        key: ElemType,
        value: Box<TypeKind>,
    },
    #[default]
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Size(i64),
    Symbol(String),
    Unknown,
}

impl ModelProto {
    pub fn decode(bytes: &[u8]) -> Result<ModelProto> {
        let mut model = ModelProto::default();
        let mut r = Reader::new(bytes, "ModelProto");
        let mut saw_graph = false;
        while let Some((field, wire)) = r.next()? {
            match field {
                1 => model.ir_version = expect_varint(wire, "ModelProto", "ir_version")? as i64,
                2 => model.producer_name = string(wire, "ModelProto", "producer_name")?,
                3 => model.producer_version = string(wire, "ModelProto", "producer_version")?,
                5 => model.model_version = expect_varint(wire, "ModelProto", "model_version")? as i64,
                7 => {
                    model.graph = GraphProto::decode(expect_bytes(wire, "ModelProto", "graph")?)?;
                    saw_graph = true;
                }
                8 => {
                    let b = expect_bytes(wire, "ModelProto", "opset_import")?;
                    let (mut domain, mut version) = (String::new(), 0);
                    let mut o = Reader::new(b, "OperatorSetIdProto");
                    while let Some((f, w)) = o.next()? {
                        match f {
                            1 => domain = string(w, "OperatorSetIdProto", "domain")?,
                            2 => version = expect_varint(w, "OperatorSetIdProto", "version")? as i64,
                            _ => {}
                        }
                    }
                    model.opsets.insert(domain, version);
                }
                14 => {
                    let b = expect_bytes(wire, "ModelProto", "metadata_props")?;
                    let (mut key, mut value) = (String::new(), String::new());
                    let mut e = Reader::new(b, "StringStringEntryProto");
                    while let Some((f, w)) = e.next()? {
                        match f {
                            1 => key = string(w, "StringStringEntryProto", "key")?,
                            2 => value = string(w, "StringStringEntryProto", "value")?,
                            _ => {}
                        }
                    }
                    model.metadata.insert(key, value);
                }
                25 => {
                    let b = expect_bytes(wire, "ModelProto", "functions")?;
                    let mut name = String::new();
                    let mut e = Reader::new(b, "FunctionProto");
                    while let Some((f, w)) = e.next()? {
                        if f == 1 {
                            name = string(w, "FunctionProto", "name")?;
                        }
                    }
                    model.functions.push(name);
                }
                _ => {}
            }
        }
        if !saw_graph {
            return Err(DecodeError {
                at: "ModelProto".into(),
                problem: "the model has no graph".into(),
            });
        }
        Ok(model)
    }
}

impl GraphProto {
    fn decode(bytes: &[u8]) -> Result<GraphProto> {
        let mut graph = GraphProto::default();
        let mut r = Reader::new(bytes, "GraphProto");
        while let Some((field, wire)) = r.next()? {
            match field {
                1 => graph
                    .nodes
                    .push(NodeProto::decode(expect_bytes(wire, "GraphProto", "node")?)?),
                2 => graph.name = string(wire, "GraphProto", "name")?,
                5 => graph
                    .initializers
                    .push(TensorProto::decode(expect_bytes(wire, "GraphProto", "initializer")?)?),
                11 => graph
                    .inputs
                    .push(ValueInfo::decode(expect_bytes(wire, "GraphProto", "input")?)?),
                12 => graph
                    .outputs
                    .push(ValueInfo::decode(expect_bytes(wire, "GraphProto", "output")?)?),
                15 => graph.has_sparse_initializers = true,
                _ => {}
            }
        }
        Ok(graph)
    }
}

impl NodeProto {
    fn decode(bytes: &[u8]) -> Result<NodeProto> {
        let mut node = NodeProto::default();
        let mut r = Reader::new(bytes, "NodeProto");
        while let Some((field, wire)) = r.next()? {
            match field {
                1 => node.inputs.push(string(wire, "NodeProto", "input")?),
                2 => node.outputs.push(string(wire, "NodeProto", "output")?),
                3 => node.name = string(wire, "NodeProto", "name")?,
                4 => node.op_type = string(wire, "NodeProto", "op_type")?,
                5 => node
                    .attributes
                    .push(AttributeProto::decode(expect_bytes(wire, "NodeProto", "attribute")?)?),
                7 => node.domain = string(wire, "NodeProto", "domain")?,
                _ => {}
            }
        }
        Ok(node)
    }
}

impl AttributeProto {
    fn decode(bytes: &[u8]) -> Result<AttributeProto> {
        const M: &str = "AttributeProto";
        let mut a = AttributeProto::default();
        let mut r = Reader::new(bytes, M);
        while let Some((field, wire)) = r.next()? {
            match field {
                1 => a.name = string(wire, M, "name")?,
                2 => match wire {
                    Wire::Fixed32(v) => a.f = Some(f32::from_bits(v)),
                    _ => return Err(r.error("attribute `f` is not a float32")),
                },
                3 => a.i = Some(expect_varint(wire, M, "i")? as i64),
                4 => a.s = Some(expect_bytes(wire, M, "s")?.to_vec()),
                5 => a.t = Some(TensorProto::decode(expect_bytes(wire, M, "t")?)?),
                6 | 11 => a.has_graph = true,
                7 => push_f32s(&mut a.floats, wire, "AttributeProto.floats")?,
                8 => push_varints(&mut a.ints, wire, "AttributeProto.ints")?,
                9 => a.strings.push(expect_bytes(wire, M, "strings")?.to_vec()),
                21 => a.ref_attr_name = Some(string(wire, M, "ref_attr_name")?),
                _ => {}
            }
        }
        Ok(a)
    }
}

impl TensorProto {
    pub fn decode(bytes: &[u8]) -> Result<TensorProto> {
        const M: &str = "TensorProto";
        let mut dims = Vec::new();
        let mut code = 0i64;
        let mut name = String::new();
        let (mut floats, mut doubles, mut ints, mut uints) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut strings = Vec::new();
        let mut raw: Option<&[u8]> = None;
        let mut external = false;
        let mut r = Reader::new(bytes, M);
        while let Some((field, wire)) = r.next()? {
            match field {
                1 => push_varints(&mut dims, wire, "TensorProto.dims")?,
                2 => code = expect_varint(wire, M, "data_type")? as i64,
                4 => push_f32s(&mut floats, wire, "TensorProto.float_data")?,
                5 | 7 => push_varints(&mut ints, wire, "TensorProto.int_data")?,
                6 => strings.push(expect_bytes(wire, M, "string_data")?.to_vec()),
                8 => name = string(wire, M, "name")?,
                9 => raw = Some(expect_bytes(wire, M, "raw_data")?),
                10 => push_f64s(&mut doubles, wire, "TensorProto.double_data")?,
                11 => push_varints(&mut uints, wire, "TensorProto.uint64_data")?,
                14 => external = expect_varint(wire, M, "data_location")? == 1,
                _ => {}
            }
        }
        let at = || format!("tensor `{name}`");
        if external {
            return Err(DecodeError {
                at: at(),
                problem: "its data is stored in an external file; save the model with its weights inside \
                          (`onnx.save_model(model, path, save_as_external_data=False)`)"
                    .into(),
            });
        }
        let elem_type = ElemType::from_code(code);
        let count: i64 = dims
            .iter()
            .try_fold(1i64, |acc, &d| if d < 0 { None } else { acc.checked_mul(d) })
            .ok_or_else(|| DecodeError {
                at: at(),
                problem: format!("invalid dimensions {dims:?}"),
            })?;
        let data = match (elem_type, raw) {
            (ElemType::Float, Some(raw)) => TensorData::F32(
                le_chunks(raw, 4, at)?
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            (ElemType::Double, Some(raw)) => TensorData::F64(
                le_chunks(raw, 8, at)?
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            (ElemType::Float16, Some(raw)) => TensorData::F32(
                le_chunks(raw, 2, at)?
                    .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                    .collect(),
            ),
            (ElemType::Bfloat16, Some(raw)) => TensorData::F32(
                le_chunks(raw, 2, at)?
                    .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
                    .collect(),
            ),
            (ElemType::Int64, Some(raw)) => TensorData::I64(
                le_chunks(raw, 8, at)?
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            (ElemType::Uint64, Some(raw)) => TensorData::I64(
                le_chunks(raw, 8, at)?
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            ),
            (ElemType::Int32, Some(raw)) => TensorData::I64(
                le_chunks(raw, 4, at)?
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            ),
            (ElemType::Uint32, Some(raw)) => TensorData::I64(
                le_chunks(raw, 4, at)?
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            ),
            (ElemType::Int16, Some(raw)) => TensorData::I64(
                le_chunks(raw, 2, at)?
                    .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            ),
            (ElemType::Uint16, Some(raw)) => TensorData::I64(
                le_chunks(raw, 2, at)?
                    .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            ),
            (ElemType::Int8, Some(raw)) => TensorData::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
            (ElemType::Uint8 | ElemType::Bool, Some(raw)) => TensorData::I64(raw.iter().map(|&b| b as i64).collect()),
            (ElemType::Float, None) => TensorData::F32(floats),
            (ElemType::Double, None) => TensorData::F64(doubles),
            (ElemType::Float16, None) => {
                TensorData::F32(ints.iter().map(|&b| half::f16::from_bits(b as u16).to_f32()).collect())
            }
            (ElemType::Bfloat16, None) => {
                TensorData::F32(ints.iter().map(|&b| half::bf16::from_bits(b as u16).to_f32()).collect())
            }
            (ElemType::Uint64 | ElemType::Uint32, None) => TensorData::I64(if uints.is_empty() { ints } else { uints }),
            (ElemType::Int8, None) => TensorData::I64(ints.iter().map(|&v| v as i32 as i8 as i64).collect()),
            (ElemType::Int16, None) => TensorData::I64(ints.iter().map(|&v| v as i32 as i16 as i64).collect()),
            (ElemType::Int32, None) => TensorData::I64(ints.iter().map(|&v| v as i32 as i64).collect()),
            (t, None) if t.is_integer() => TensorData::I64(ints),
            (ElemType::String, _) => TensorData::Strings(strings),
            (other, _) => {
                return Err(DecodeError {
                    at: at(),
                    problem: format!("{other} tensors are not supported"),
                });
            }
        };
        if data.len() as i64 != count {
            return Err(DecodeError {
                at: at(),
                problem: format!("holds {} values for dimensions {dims:?} ({count} values)", data.len()),
            });
        }
        Ok(TensorProto {
            name,
            dims,
            elem_type,
            data,
        })
    }
}

fn le_chunks<'a>(raw: &'a [u8], width: usize, at: impl Fn() -> String) -> Result<std::slice::ChunksExact<'a, u8>> {
    if !raw.len().is_multiple_of(width) {
        return Err(DecodeError {
            at: at(),
            problem: format!(
                "raw data of {} bytes is not a whole number of {width}-byte values",
                raw.len()
            ),
        });
    }
    Ok(raw.chunks_exact(width))
}

impl ValueInfo {
    fn decode(bytes: &[u8]) -> Result<ValueInfo> {
        let mut info = ValueInfo::default();
        let mut r = Reader::new(bytes, "ValueInfoProto");
        while let Some((field, wire)) = r.next()? {
            match field {
                1 => info.name = string(wire, "ValueInfoProto", "name")?,
                2 => info.kind = decode_type(expect_bytes(wire, "ValueInfoProto", "type")?)?,
                _ => {}
            }
        }
        Ok(info)
    }
}

fn decode_type(bytes: &[u8]) -> Result<TypeKind> {
    decode_type_at(bytes, 0)
}

/// Types nest (a sequence of maps of tensors); deeper than any real model
/// is a corrupt or hostile file, refused before the stack runs out.
const MAX_TYPE_DEPTH: usize = 16;

fn decode_type_at(bytes: &[u8], depth: usize) -> Result<TypeKind> {
    const M: &str = "TypeProto";
    if depth > MAX_TYPE_DEPTH {
        return Err(DecodeError {
            at: M.into(),
            problem: format!("types nest deeper than {MAX_TYPE_DEPTH} levels"),
        });
    }
    let mut kind = TypeKind::Unknown;
    let mut r = Reader::new(bytes, M);
    while let Some((field, wire)) = r.next()? {
        match field {
            1 => {
                let mut elem_type = ElemType::Other(0);
                let mut shape = None;
                let mut t = Reader::new(expect_bytes(wire, M, "tensor_type")?, "TypeProto.Tensor");
                while let Some((f, w)) = t.next()? {
                    match f {
                        1 => elem_type = ElemType::from_code(expect_varint(w, M, "elem_type")? as i64),
                        2 => {
                            let mut dims = Vec::new();
                            let mut s = Reader::new(expect_bytes(w, M, "shape")?, "TensorShapeProto");
                            while let Some((f, w)) = s.next()? {
                                if f != 1 {
                                    continue;
                                }
                                let mut dim = Dim::Unknown;
                                let mut d = Reader::new(expect_bytes(w, M, "dim")?, "Dimension");
                                while let Some((f, w)) = d.next()? {
                                    match f {
                                        1 => dim = Dim::Size(expect_varint(w, M, "dim_value")? as i64),
                                        2 => dim = Dim::Symbol(string(w, M, "dim_param")?),
                                        _ => {}
                                    }
                                }
                                dims.push(dim);
                            }
                            shape = Some(dims);
                        }
                        _ => {}
                    }
                }
                kind = TypeKind::Tensor { elem_type, shape };
            }
            4 => {
                let mut s = Reader::new(expect_bytes(wire, M, "sequence_type")?, "TypeProto.Sequence");
                let mut elem = TypeKind::Unknown;
                while let Some((f, w)) = s.next()? {
                    if f == 1 {
                        elem = decode_type_at(expect_bytes(w, M, "elem_type")?, depth + 1)?;
                    }
                }
                kind = TypeKind::Sequence(Box::new(elem));
            }
            5 => {
                let mut m = Reader::new(expect_bytes(wire, M, "map_type")?, "TypeProto.Map");
                let (mut key, mut value) = (ElemType::Other(0), TypeKind::Unknown);
                while let Some((f, w)) = m.next()? {
                    match f {
                        1 => key = ElemType::from_code(expect_varint(w, M, "key_type")? as i64),
                        2 => value = decode_type_at(expect_bytes(w, M, "value_type")?, depth + 1)?,
                        _ => {}
                    }
                }
                kind = TypeKind::Map {
                    key,
                    value: Box::new(value),
                };
            }
            _ => {}
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn field_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(field) << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    #[test]
    fn tensors_decode_packed_unpacked_and_raw() {
        // dims [2] packed, float_data unpacked (two fixed32 fields).
        let mut t = Vec::new();
        field_bytes(1, &[2], &mut t);
        varint(2 << 3, &mut t);
        varint(1, &mut t);
        for v in [1.5f32, -2.0] {
            varint(4 << 3 | 5, &mut t);
            t.extend_from_slice(&v.to_le_bytes());
        }
        field_bytes(8, b"w", &mut t);
        let tensor = TensorProto::decode(&t).unwrap();
        assert_eq!(tensor.dims, vec![2]);
        assert_eq!(tensor.data, TensorData::F32(vec![1.5, -2.0]));

        // int64 raw data with a negative value.
        let mut t = Vec::new();
        field_bytes(1, &[3], &mut t);
        varint(2 << 3, &mut t);
        varint(7, &mut t);
        let raw: Vec<u8> = [-1i64, 0, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        field_bytes(9, &raw, &mut t);
        assert_eq!(TensorProto::decode(&t).unwrap().data, TensorData::I64(vec![-1, 0, 5]));
    }

    #[test]
    fn truncated_and_mismatched_tensors_are_errors() {
        let mut t = Vec::new();
        field_bytes(1, &[3], &mut t);
        varint(2 << 3, &mut t);
        varint(1, &mut t);
        field_bytes(9, &[0; 8], &mut t);
        let e = TensorProto::decode(&t).unwrap_err();
        assert!(e.problem.contains("2 values for dimensions [3]"), "{e}");
        let e = TensorProto::decode(&t[..t.len() - 3]).unwrap_err();
        assert!(e.problem.contains("truncated"), "{e}");
    }

    #[test]
    fn a_model_without_a_graph_is_refused() {
        let mut m = Vec::new();
        varint(1 << 3, &mut m);
        varint(8, &mut m);
        let e = ModelProto::decode(&m).unwrap_err();
        assert!(e.problem.contains("no graph"), "{e}");
    }
}
