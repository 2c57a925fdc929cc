//! The crate's one error type.
//!
//! Every fallible function returns [`Result<T>`]. User input (data, hyperparameters, model files)
//! never panics: it produces one of these variants, with a message that names what is wrong.

use std::path::PathBuf;

/// Errors produced by normflow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A hyperparameter or configuration value is invalid.
    #[error("invalid configuration: {name} = {value}: {reason}")]
    InvalidConfig {
        /// The parameter's name, as the user spells it (e.g. `hidden`, `lr`).
        name: String,
        /// The offending value, formatted.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },

    /// A tensor has the wrong shape for the operation.
    #[error("shape mismatch in {context}: expected {expected}, got {got:?}")]
    Shape {
        /// Which operation or argument.
        context: String,
        /// The expected shape, in words (e.g. `(batch, 4)`).
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },

    /// A context tensor was required but not given, or given to an unconditional model.
    #[error("context: {0}")]
    Context(String),

    /// A computation produced NaN or infinite values where finite ones are required.
    #[error("non-finite values: {0}")]
    NonFinite(String),

    /// A numerical routine (an iterative inverse, a solver) did not reach its tolerance.
    #[error("numerical failure: {0}")]
    Numerical(String),

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A model directory or checkpoint is malformed, truncated, or does not match its spec.
    #[error("model file {}: {reason}", path.display())]
    ModelFile {
        /// The file or directory concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Data given to a loader or to training is unusable (empty, wrong width, non-finite...).
    #[error("data: {0}")]
    Data(String),

    /// [`crate::testing::check_bijection`] found a bijection that breaks its contract.
    #[error("bijection check failed: {0}")]
    CheckFailed(String),

    /// A serialization error (spec files).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::InvalidConfig`] for `name = value`, with the reason a valid value must meet.
    pub fn config(name: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Shape`] for `context`.
    pub fn shape(context: impl Into<String>, expected: impl Into<String>, got: &[usize]) -> Self {
        Error::Shape { context: context.into(), expected: expected.into(), got: got.to_vec() }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// An [`Error::ModelFile`] for `path`.
    pub fn model_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::ModelFile { path: path.into(), reason: reason.into() }
    }
}

/// Returns early with an [`Error::InvalidConfig`] unless `cond` holds.
#[macro_export]
macro_rules! ensure_config {
    ($cond:expr, $name:expr, $value:expr, $reason:expr) => {
        if !$cond {
            return Err($crate::Error::config($name, $value, $reason));
        }
    };
}
