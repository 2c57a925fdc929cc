//! Polyphonic music as sequences of note sets: loading, the note range, padded batches.
//!
//! Two JSON layouts are accepted, each an object with `train`, `valid` and `test` splits:
//!
//! - the classic piano-roll layout of Boulanger-Lewandowski et al. (2012) (JSB Chorales,
//!   Nottingham, Piano-midi.de, MuseData): every split is a list of sequences, a sequence a list
//!   of steps, a step a list of MIDI pitches: `{"train": [[[60, 64], [], ...], ...], ...}`. The
//!   published files are Python pickles; `python3 -c "import pickle, json, sys;
//!   json.dump(pickle.load(open(sys.argv[1], 'rb'), encoding='latin1'), open(sys.argv[2], 'w'))"
//!   JSB.pickle JSB.json` converts one;
//! - the same with every sequence an object `{"source": "bwv398.mxl", "steps": [[...], ...]}`
//!   (the layout of `shared/data/jsb-chorales`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::{Error, Result};

/// A sequence: one set of MIDI pitches (0..=127) per time step.
pub type NoteSequence = Vec<Vec<u8>>;

/// The three splits of a sequence data set.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceSplits {
    /// Training sequences.
    pub train: Vec<NoteSequence>,
    /// Validation sequences.
    pub valid: Vec<NoteSequence>,
    /// Test sequences.
    pub test: Vec<NoteSequence>,
}

/// The split names, in file order.
pub const SPLITS: [&str; 3] = ["train", "valid", "test"];

impl SequenceSplits {
    /// The split called `name` (`train`, `valid` or `test`).
    pub fn split(&self, name: &str) -> Option<&[NoteSequence]> {
        match name {
            "train" => Some(&self.train),
            "valid" => Some(&self.valid),
            "test" => Some(&self.test),
            _ => None,
        }
    }

    /// Every sequence of every split.
    pub fn all(&self) -> impl Iterator<Item = &NoteSequence> {
        self.train.iter().chain(&self.valid).chain(&self.test)
    }
}

/// Total number of time steps of `sequences`: the denominator of per-step figures.
pub fn total_steps(sequences: &[NoteSequence]) -> usize {
    sequences.iter().map(Vec::len).sum()
}

/// Reads a sequence file (either layout, see the [module docs](self)).
///
/// Errors name the file and, for bad content, the split, sequence and step. A Python pickle gets
/// an error that says how to convert it.
pub fn load_sequences(path: &Path) -> Result<SequenceSplits> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext == "pickle" || ext == "pkl" {
        return Err(Error::Data(format!(
            "{}: a Python pickle; normflow reads the same data as JSON. Convert it with\n  \
             python3 -c \"import pickle, json, sys; json.dump(pickle.load(open(sys.argv[1], \
             'rb'), encoding='latin1'), open(sys.argv[2], 'w'))\" {} OUT.json",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_sequences(&text).map_err(|e| match e {
        Error::Data(msg) => Error::Data(format!("{}: {msg}", path.display())),
        other => other,
    })
}

/// Parses the JSON text of a sequence file (see [`load_sequences`]).
pub fn parse_sequences(text: &str) -> Result<SequenceSplits> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| Error::Data(format!("not valid JSON: {e}")))?;
    let object = root.as_object().ok_or_else(|| {
        Error::Data("expected a JSON object with \"train\", \"valid\" and \"test\" lists".into())
    })?;
    let mut splits = Vec::with_capacity(3);
    for name in SPLITS {
        let list = object
            .get(name)
            .ok_or_else(|| Error::Data(format!("the split \"{name}\" is missing")))?
            .as_array()
            .ok_or_else(|| Error::Data(format!("\"{name}\" must be a list of sequences")))?;
        if list.is_empty() {
            return Err(Error::Data(format!("the split \"{name}\" has no sequences")));
        }
        let sequences = list
            .iter()
            .enumerate()
            .map(|(i, v)| parse_sequence(v).map_err(|e| Error::Data(format!("{name}[{i}]: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        splits.push(sequences);
    }
    let test = splits.pop().unwrap_or_default();
    let valid = splits.pop().unwrap_or_default();
    let train = splits.pop().unwrap_or_default();
    Ok(SequenceSplits { train, valid, test })
}

/// One sequence: a list of steps, or an object whose `steps` is one. Errors are plain messages
/// (the caller adds where).
fn parse_sequence(value: &Value) -> std::result::Result<NoteSequence, String> {
    let steps = match value {
        Value::Array(steps) => steps,
        Value::Object(o) => o
            .get("steps")
            .and_then(Value::as_array)
            .ok_or("a sequence object needs a \"steps\" list")?,
        _ => return Err("a sequence must be a list of steps or an object with \"steps\"".into()),
    };
    if steps.is_empty() {
        return Err("the sequence has no steps".into());
    }
    steps
        .iter()
        .enumerate()
        .map(|(t, step)| {
            let pitches =
                step.as_array().ok_or(format!("step {t} must be a list of MIDI pitches"))?;
            let mut notes = pitches
                .iter()
                .map(|p| match p.as_f64() {
                    Some(v) if v.fract() == 0.0 && (0.0..=127.0).contains(&v) => Ok(v as u8),
                    _ => {
                        Err(format!("step {t}: pitch {p} is not a MIDI pitch (an integer 0..127)"))
                    }
                })
                .collect::<std::result::Result<Vec<u8>, String>>()?;
            notes.sort_unstable();
            notes.dedup();
            Ok(notes)
        })
        .collect()
}

/// The pitches a model has one Bernoulli output for: `count` pitches from `low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoteRange {
    /// Lowest modelled MIDI pitch.
    pub low: u8,
    /// Number of modelled pitches.
    pub count: usize,
}

impl NoteRange {
    /// The 88 piano keys (MIDI 21..=108): the published benchmarks' output layer.
    pub const PIANO: NoteRange = NoteRange { low: 21, count: 88 };
    /// Every MIDI pitch.
    pub const MIDI: NoteRange = NoteRange { low: 0, count: 128 };

    /// The piano range when every pitch of the data set lies on it, else all of MIDI.
    pub fn for_data(data: &SequenceSplits) -> NoteRange {
        let on_piano = data.all().flatten().flatten().all(|&p| Self::PIANO.contains(p));
        if on_piano {
            Self::PIANO
        } else {
            Self::MIDI
        }
    }

    /// Whether `pitch` has an output.
    pub fn contains(&self, pitch: u8) -> bool {
        (self.low as usize..self.low as usize + self.count).contains(&(pitch as usize))
    }

    /// The pitch of output `index`.
    pub fn pitch(&self, index: usize) -> u8 {
        (self.low as usize + index) as u8
    }
}

/// Sequences padded to a common length: the unit of computation of the sequence models.
#[derive(Debug, Clone)]
pub struct SeqBatch {
    /// Piano rolls `(B, T, N)`: 1 where a pitch sounds, 0 elsewhere and at padded steps.
    pub x: Tensor,
    /// `(B, T)`: 1 at real steps, 0 at padding (after each sequence's end).
    pub mask: Tensor,
    /// The length of each sequence.
    pub lengths: Vec<usize>,
    /// `(B * T,)` indices that reverse each sequence within its length and leave padding in
    /// place (an involution): a backward recurrence reads `x` gathered by them.
    pub reverse_index: Tensor,
}

impl SeqBatch {
    /// Pads `sequences` to the longest one. Pitches outside `range` are an error.
    pub fn new(
        sequences: &[&NoteSequence],
        range: NoteRange,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let b = sequences.len();
        let t_max = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 || t_max == 0 {
            return Err(Error::Data("a batch needs at least one non-empty sequence".into()));
        }
        let n = range.count;
        let mut x = vec![0f32; b * t_max * n];
        let mut mask = vec![0f32; b * t_max];
        let mut reverse = Vec::with_capacity(b * t_max);
        for (i, seq) in sequences.iter().enumerate() {
            let len = seq.len();
            for (t, step) in seq.iter().enumerate() {
                mask[i * t_max + t] = 1.0;
                for &p in step {
                    if !range.contains(p) {
                        return Err(Error::Data(format!(
                            "pitch {p} at step {t} is outside the model's range {}..={}",
                            range.low,
                            range.low as usize + n - 1
                        )));
                    }
                    x[(i * t_max + t) * n + (p - range.low) as usize] = 1.0;
                }
            }
            for t in 0..t_max {
                let source = if t < len { len - 1 - t } else { t };
                reverse.push((i * t_max + source) as u32);
            }
        }
        Ok(Self {
            x: Tensor::from_vec(x, (b, t_max, n), &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)?,
            mask: Tensor::from_vec(mask, (b, t_max), &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)?,
            lengths: sequences.iter().map(|s| s.len()).collect(),
            reverse_index: Tensor::from_vec(reverse, b * t_max, device)?,
        })
    }

    /// Number of sequences `B`.
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }

    /// Padded length `T`.
    pub fn steps(&self) -> usize {
        self.mask.dims()[1]
    }

    /// Number of real (unpadded) steps.
    pub fn real_steps(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Reverses every sequence of `(B, T, ...)` within its length (padding stays in place).
    pub fn reverse(&self, t: &Tensor) -> Result<Tensor> {
        let dims = t.dims().to_vec();
        let (b, steps) = (self.batch(), self.steps());
        if dims.len() < 2 || dims[0] != b || dims[1] != steps {
            return Err(Error::shape("sequence reversal", format!("({b}, {steps}, ...)"), &dims));
        }
        let mut flat_dims = vec![b * steps];
        flat_dims.extend_from_slice(&dims[2..]);
        Ok(t.reshape(flat_dims)?.index_select(&self.reverse_index, 0)?.reshape(dims)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_parse_to_the_same_sequences() -> Result<()> {
        let classic =
            r#"{"train": [[[60, 64], [], [62]]], "valid": [[[21]]], "test": [[[108, 60]]]}"#;
        let objects = r#"{"train": [{"source": "a", "steps": [[64, 60], [], [62]]}],
            "valid": [{"steps": [[21]]}], "test": [{"steps": [[60.0, 108]]}]}"#;
        let a = parse_sequences(classic)?;
        assert_eq!(a, parse_sequences(objects)?);
        assert_eq!(a.train, vec![vec![vec![60, 64], vec![], vec![62]]]);
        assert_eq!(NoteRange::for_data(&a), NoteRange::PIANO);
        Ok(())
    }

    #[test]
    fn bad_content_is_reported_with_its_place() {
        let err = |text: &str| parse_sequences(text).unwrap_err().to_string();
        assert!(err("[1, 2]").contains("JSON object"));
        assert!(err(r#"{"train": [[[60]]], "valid": [[[60]]]}"#).contains("\"test\" is missing"));
        assert!(
            err(r#"{"train": [], "valid": [[[60]]], "test": [[[60]]]}"#).contains("no sequences")
        );
        let e = err(r#"{"train": [[[60]], [[61], [128]]], "valid": [[[60]]], "test": [[[60]]]}"#);
        assert!(e.contains("train[1]") && e.contains("step 1") && e.contains("128"), "{e}");
        let e = err(r#"{"train": [[[60]]], "valid": [[[60.5]]], "test": [[[60]]]}"#);
        assert!(e.contains("valid[0]") && e.contains("60.5"), "{e}");
        assert!(err(r#"{"train": [[]], "valid": [[[60]]], "test": [[[60]]]}"#).contains("no steps"));
        assert!(err("{\"train\": ").contains("not valid JSON"));
    }

    #[test]
    fn pickles_get_the_conversion_command() {
        let e = load_sequences(Path::new("JSB Chorales.pickle")).unwrap_err().to_string();
        assert!(e.contains("pickle") && e.contains("json.dump"), "{e}");
    }

    #[test]
    fn batches_pad_mask_and_reverse_within_each_length() -> Result<()> {
        let a: NoteSequence = vec![vec![21], vec![22], vec![23]];
        let b: NoteSequence = vec![vec![108]];
        let batch = SeqBatch::new(&[&a, &b], NoteRange::PIANO, DType::F64, &Device::Cpu)?;
        assert_eq!(batch.x.dims(), [2, 3, 88]);
        assert_eq!(batch.mask.to_vec2::<f64>()?, [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]);
        assert_eq!(batch.real_steps(), 4);
        let first_note = batch.x.narrow(2, 0, 3)?.to_vec3::<f64>()?;
        assert_eq!(first_note[0], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        let r = batch.reverse(&batch.x)?.narrow(2, 0, 3)?.to_vec3::<f64>()?;
        assert_eq!(r[0], [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
        assert_eq!(
            batch.reverse(&batch.reverse(&batch.x)?)?.to_vec3::<f64>()?,
            batch.x.to_vec3::<f64>()?
        );
        let low: NoteSequence = vec![vec![20]];
        assert!(SeqBatch::new(&[&low], NoteRange::PIANO, DType::F64, &Device::Cpu).is_err());
        Ok(())
    }
}
