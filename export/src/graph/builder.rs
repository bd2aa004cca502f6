//! A small ONNX graph builder over `onnx-protobuf`: unique value names, float initializers
//! stored as raw little-endian bytes, typed value infos, and the attribute kinds this network
//! needs. It knows nothing about VertebraFormer.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, MessageField};

/// ONNX opset of every graph this crate writes (ONNX Runtime 1.31 supports up to 23).
pub const OPSET: i64 = 17;

/// IR version written into every model. onnx 1.23's default (14) is newer than ONNX Runtime
/// 1.31.1 accepts (13); 8 is the IR of opset 17's release and what the checker expects.
pub const IR_VERSION: i64 = 8;

/// One dimension of a declared input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimSpec {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size (e.g. `batch`), chosen at run time.
    Symbol(String),
}

/// Element type of a declared value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
}

impl Elem {
    fn onnx(self) -> i32 {
        match self {
            Elem::F32 => DataType::FLOAT as i32,
            Elem::F16 => DataType::FLOAT16 as i32,
        }
    }
}

/// A typed tensor value info, `shape` `None` for "rank and sizes unknown".
pub fn value_info(name: &str, elem: Elem, shape: Option<&[DimSpec]>) -> ValueInfoProto {
    let mut tt = TypeTensor::new();
    tt.elem_type = elem.onnx();
    if let Some(shape) = shape {
        let mut sp = TensorShapeProto::new();
        sp.dim = shape
            .iter()
            .map(|d| {
                let mut dim = Dimension::new();
                dim.value = Some(match d {
                    DimSpec::Fixed(n) => dimension::Value::DimValue(*n as i64),
                    DimSpec::Symbol(s) => dimension::Value::DimParam(s.clone()),
                });
                dim
            })
            .collect();
        tt.shape = MessageField::some(sp);
    }
    let mut tp = TypeProto::new();
    tp.value = Some(TypeValue::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    name.clone_into(&mut vi.name);
    vi.type_ = MessageField::some(tp);
    vi
}

/// An integer attribute.
///
/// `onnx-protobuf` is generated from proto3, which does not serialise a scalar field equal to
/// 0: an attribute `v = 0` would arrive without a value. No attribute here needs 0 (use an
/// initializer instead), and this assertion keeps it that way.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    assert_ne!(
        v, 0,
        "attribute {name} = 0 would be dropped by proto3 serialisation"
    );
    let mut a = AttributeProto::new();
    name.clone_into(&mut a.name);
    a.type_ = EnumOrUnknown::new(AttributeType::INT);
    a.i = v;
    a
}

/// An integer-list attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    name.clone_into(&mut a.name);
    a.type_ = EnumOrUnknown::new(AttributeType::INTS);
    a.ints = v.to_vec();
    a
}

/// A float attribute.
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    name.clone_into(&mut a.name);
    a.type_ = EnumOrUnknown::new(AttributeType::FLOAT);
    a.f = v;
    a
}

/// A subgraph attribute (the branches of `If`).
pub fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    name.clone_into(&mut a.name);
    a.type_ = EnumOrUnknown::new(AttributeType::GRAPH);
    a.g = MessageField::some(g);
    a
}

/// Collects nodes and initializers of one graph.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
    /// Element type of weights and computation (F32, or F16 for the half-precision variant).
    pub compute: Option<Elem>,
}

impl GraphBuilder {
    /// An empty graph computing in `compute` precision.
    pub fn new(compute: Elem) -> Self {
        Self {
            compute: Some(compute),
            ..Self::default()
        }
    }

    fn elem(&self) -> Elem {
        self.compute.unwrap_or(Elem::F32)
    }

    /// A fresh value name starting with `hint`.
    pub fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a node with one output named `out`.
    pub fn node_to(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        let mut n = NodeProto::new();
        op.clone_into(&mut n.op_type);
        n.name = format!("{op}_{}", self.nodes.len());
        n.input = inputs.iter().map(|s| (*s).to_owned()).collect();
        n.output = vec![out.to_owned()];
        n.attribute = attrs;
        self.nodes.push(n);
    }

    /// Adds a node with one fresh output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_to(op, inputs, attrs, &out);
        out
    }

    /// Adds a float initializer (stored in the compute precision) and returns its name.
    pub fn init_float(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "initializer {name}: shape {shape:?} does not hold {} values",
            data.len()
        );
        let mut t = TensorProto::new();
        name.clone_into(&mut t.name);
        t.dims = shape.iter().map(|&d| d as i64).collect();
        match self.elem() {
            Elem::F32 => {
                t.data_type = DataType::FLOAT as i32;
                t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            }
            Elem::F16 => {
                t.data_type = DataType::FLOAT16 as i32;
                t.raw_data = data
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
                    .collect();
            }
        }
        self.initializers.push(t);
        name.to_owned()
    }

    /// A float scalar constant (rank 0) in the compute precision.
    pub fn scalar(&mut self, hint: &str, v: f32) -> String {
        let name = self.fresh(hint);
        self.init_float(&name, &[], &[v])
    }

    /// An int64 vector constant (shapes, axes).
    pub fn ints(&mut self, hint: &str, v: &[i64]) -> String {
        let name = self.fresh(hint);
        let mut t = TensorProto::new();
        t.name.clone_from(&name);
        t.dims = vec![v.len() as i64];
        t.data_type = DataType::INT64 as i32;
        t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializers.push(t);
        name
    }

    /// An int64 scalar constant (rank 0).
    pub fn int_scalar(&mut self, hint: &str, v: i64) -> String {
        let name = self.fresh(hint);
        let mut t = TensorProto::new();
        t.name.clone_from(&name);
        t.data_type = DataType::INT64 as i32;
        t.raw_data = v.to_le_bytes().to_vec();
        self.initializers.push(t);
        name
    }

    /// An empty float initializer of `shape` (one dimension 0) that doubles as the default of
    /// an optional graph input of the same name.
    pub fn empty_default(&mut self, name: &str, shape: &[usize]) {
        let mut t = TensorProto::new();
        name.clone_into(&mut t.name);
        t.dims = shape.iter().map(|&d| d as i64).collect();
        t.data_type = DataType::FLOAT as i32;
        self.initializers.push(t);
    }

    /// Declares a graph input.
    pub fn input(&mut self, vi: ValueInfoProto) {
        self.inputs.push(vi);
    }

    /// Declares a graph output.
    pub fn output(&mut self, vi: ValueInfoProto) {
        self.outputs.push(vi);
    }

    /// The finished graph.
    pub fn into_graph(self, name: &str) -> GraphProto {
        let mut g = GraphProto::new();
        name.clone_into(&mut g.name);
        g.node = self.nodes;
        g.initializer = self.initializers;
        g.input = self.inputs;
        g.output = self.outputs;
        g
    }
}

/// Wraps a graph into a model with this crate's IR version and opset.
pub fn model(graph: GraphProto, doc: &str) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = IR_VERSION;
    let mut op = OperatorSetIdProto::new();
    op.domain = String::new();
    op.version = OPSET;
    m.opset_import = vec![op];
    m.producer_name = "vertebra-export".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    doc.clone_into(&mut m.doc_string);
    m.graph = MessageField::some(graph);
    m
}
