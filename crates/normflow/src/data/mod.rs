//! Data: built-in toy densities (loaders and preprocessing come later).

pub mod toy;
