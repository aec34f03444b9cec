//! Small model files that ask for huge work or memory: each is refused with
//! an error naming the file and what it asks for, quickly and in bounded
//! memory (the tests run `lakescore` under an address-space limit), instead
//! of running for minutes or aborting on a failed allocation.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A protocol-buffers message, written field by field (what ONNX files are).
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn int(mut self, field: u64, v: i64) -> Self {
        Self::varint(&mut self.0, field << 3);
        Self::varint(&mut self.0, v as u64);
        self
    }
    fn bytes(mut self, field: u64, bytes: &[u8]) -> Self {
        Self::varint(&mut self.0, (field << 3) | 2);
        Self::varint(&mut self.0, bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }
    fn text(self, field: u64, text: &str) -> Self {
        self.bytes(field, text.as_bytes())
    }
    fn message(self, field: u64, message: Message) -> Self {
        self.bytes(field, &message.0)
    }
    /// A packed repeated int64 field.
    fn ints(self, field: u64, values: &[i64]) -> Self {
        let mut packed = Vec::new();
        for &v in values {
            Self::varint(&mut packed, v as u64);
        }
        self.bytes(field, &packed)
    }
    /// A packed repeated float field.
    fn floats(self, field: u64, values: &[f32]) -> Self {
        let packed: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(field, &packed)
    }
}

// AttributeProto: name 1, f 2, i 3, s 4, floats 7, ints 8, strings 9, type 20.
fn ints_attribute(name: &str, values: &[i64]) -> Message {
    Message::default().text(1, name).int(20, 7).ints(8, values)
}
fn floats_attribute(name: &str, values: &[f32]) -> Message {
    Message::default().text(1, name).int(20, 6).floats(7, values)
}
fn int_attribute(name: &str, value: i64) -> Message {
    Message::default().text(1, name).int(20, 2).int(3, value)
}
fn strings_attribute(name: &str, values: &[&str]) -> Message {
    values
        .iter()
        .fold(Message::default().text(1, name).int(20, 8), |m, v| m.text(9, v))
}

/// A float tensor value `[N, width]` (ValueInfoProto).
fn tensor_value(name: &str, width: i64) -> Message {
    let shape = Message::default()
        .message(1, Message::default().text(2, "N"))
        .message(1, Message::default().int(1, width));
    let tensor = Message::default().int(1, 1).message(2, shape);
    Message::default()
        .text(1, name)
        .message(2, Message::default().message(1, tensor))
}

/// An ONNX file of one `TreeEnsembleRegressor` (ai.onnx.ml opset 3): one
/// tree, a chain of `leaves - 1` splits on feature 0, and `targets[k]` the
/// target leaf k's weight adds to, of `n_targets`.
fn tree_ensemble(leaves: usize, targets: &[i64], n_targets: i64) -> Vec<u8> {
    let splits = leaves - 1;
    let n = splits + leaves;
    // Split k (node k) sends rows left to leaf (splits + k) and right to
    // split k + 1; the last split's right child is the last leaf.
    let node_ids: Vec<i64> = (0..n as i64).collect();
    let mut modes = vec!["BRANCH_LEQ"; splits];
    modes.extend(vec!["LEAF"; leaves]);
    let mut true_ids = vec![0i64; n];
    let mut false_ids = vec![0i64; n];
    for k in 0..splits {
        true_ids[k] = (splits + k) as i64;
        false_ids[k] = if k + 1 < splits { (k + 1) as i64 } else { (n - 1) as i64 };
    }
    let leaf_ids: Vec<i64> = (splits as i64..n as i64).collect();
    let node = Message::default()
        .text(1, "x")
        .text(2, "y")
        .text(3, "trees")
        .text(4, "TreeEnsembleRegressor")
        .text(7, "ai.onnx.ml")
        .message(5, ints_attribute("nodes_treeids", &vec![0; n]))
        .message(5, ints_attribute("nodes_nodeids", &node_ids))
        .message(5, ints_attribute("nodes_featureids", &vec![0; n]))
        .message(5, strings_attribute("nodes_modes", &modes))
        .message(
            5,
            floats_attribute("nodes_values", &(0..n).map(|k| k as f32).collect::<Vec<_>>()),
        )
        .message(5, ints_attribute("nodes_truenodeids", &true_ids))
        .message(5, ints_attribute("nodes_falsenodeids", &false_ids))
        .message(5, ints_attribute("target_treeids", &vec![0; leaves]))
        .message(5, ints_attribute("target_nodeids", &leaf_ids))
        .message(5, ints_attribute("target_ids", targets))
        .message(5, floats_attribute("target_weights", &vec![1.0; leaves]))
        .message(5, int_attribute("n_targets", n_targets));
    let graph = Message::default()
        .message(1, node)
        .text(2, "g")
        .message(11, tensor_value("x", 1))
        .message(12, tensor_value("y", n_targets));
    Message::default()
        .int(1, 8)
        .message(8, Message::default().text(1, "").int(2, 17))
        .message(8, Message::default().text(1, "ai.onnx.ml").int(2, 3))
        .message(7, graph)
        .0
}

/// `lakescore model inspect FILE` under a 4 GiB address-space limit: exit
/// code (a signal fails the test), stderr and how long it took.
fn inspect_bounded(model: &Path) -> (i32, String, Duration) {
    use std::os::unix::process::ExitStatusExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_lakescore"));
    command.args(["model".as_ref(), "inspect".as_ref(), model.as_os_str()]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let started = Instant::now();
    let output = command.output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.signal(), None, "killed by a signal: {stderr}");
    (output.status.code().unwrap(), stderr, took)
}

#[test]
fn the_handmade_tree_ensemble_is_a_model() {
    // The builder above makes models lakescore loads: the refusals below
    // are about their sizes, not their form.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.onnx");
    std::fs::write(&path, tree_ensemble(4, &[0, 1, 0, 1], 2)).unwrap();
    let (code, stderr, _) = inspect_bounded(&path);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_tree_whose_leaves_each_weigh_another_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spread.onnx");
    let leaves = 4_000;
    let targets: Vec<i64> = (0..leaves as i64).collect();
    let bytes = tree_ensemble(leaves, &targets, leaves as i64);
    assert!(bytes.len() < 200_000, "{} bytes", bytes.len());
    std::fs::write(&path, bytes).unwrap();
    let (code, stderr, took) = inspect_bounded(&path);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("weighs 4000 targets"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_model_of_a_million_outputs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.onnx");
    let bytes = tree_ensemble(2, &[0, 1], 1 << 20);
    assert!(bytes.len() < 1_000, "{} bytes", bytes.len());
    std::fs::write(&path, bytes).unwrap();
    let (code, stderr, took) = inspect_bounded(&path);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("1048576 outputs"), "{stderr}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn nested_ubjson_arrays_claiming_the_whole_file_are_refused_in_bounded_memory() {
    // 127 arrays, each `[#l<count>` claiming 4 million elements, the
    // innermost holding 4 million no-ops: every count is below the bytes
    // left, and the file ends long before the counts are met.
    let count: i32 = 4_000_000;
    let mut bytes = Vec::new();
    for _ in 0..127 {
        bytes.extend_from_slice(b"[#l");
        bytes.extend_from_slice(&count.to_be_bytes());
    }
    bytes.extend(std::iter::repeat_n(b'Z', count as usize));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.ubj");
    std::fs::write(&path, bytes).unwrap();
    let (code, stderr, took) = inspect_bounded(&path);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}
