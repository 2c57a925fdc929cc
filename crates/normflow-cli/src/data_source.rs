//! Resolves `--data` arguments: a file path (CSV, NPY, IDX) or a built-in toy density.

use std::path::Path;

use anyhow::{bail, Result};
use normflow::data::toy::Toy;
use normflow::data::{load_table, LoadOptions, Table};

/// The prefix that selects a built-in toy density: `toy:moons`.
pub const TOY_PREFIX: &str = "toy:";

/// Loads `spec`: `toy:NAME` draws `toy_rows` rows with `seed`; anything else is a file.
pub fn load(spec: &str, toy_rows: usize, seed: u64, drop_nonfinite: bool) -> Result<Table> {
    if let Some(name) = spec.strip_prefix(TOY_PREFIX) {
        let toy: Toy = name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        if toy_rows == 0 {
            bail!("--n 0: must be at least 1 to draw rows of {spec}");
        }
        let mut rng = normflow::random::rng_from_seed(seed);
        let values = toy.sample(toy_rows, &mut rng);
        return Ok(Table {
            columns: vec!["x".into(), "y".into()],
            rows: toy_rows,
            cols: 2,
            values,
            source: spec.to_string(),
            dropped_rows: 0,
        });
    }
    let table = load_table(Path::new(spec), &LoadOptions { drop_nonfinite }).map_err(|e| {
        // The library names its option; here it is a flag.
        anyhow::anyhow!("{}", e.to_string().replace("drop_nonfinite", "--drop-nonfinite"))
    })?;
    if table.dropped_rows > 0 {
        eprintln!(
            "note: dropped {} rows with NaN or infinite values from {spec}",
            table.dropped_rows
        );
    }
    Ok(table)
}

/// Splits a table into data columns and context columns named by `context` (names or 0-based
/// indices, comma separated).
pub fn split_context(table: &Table, context: Option<&str>) -> Result<(Table, Option<Table>)> {
    let Some(list) = context else { return Ok((table.clone(), None)) };
    let mut ctx_idx = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let idx = match table.columns.iter().position(|c| c == item) {
            Some(i) => i,
            None => match item.parse::<usize>() {
                Ok(i) if i < table.cols => i,
                _ => bail!(
                    "--context-columns: `{item}` is neither a column name nor an index below {} (columns: {})",
                    table.cols,
                    table.columns.join(", ")
                ),
            },
        };
        if !ctx_idx.contains(&idx) {
            ctx_idx.push(idx);
        }
    }
    if ctx_idx.is_empty() {
        bail!("--context-columns is empty");
    }
    let data_idx: Vec<usize> = (0..table.cols).filter(|i| !ctx_idx.contains(i)).collect();
    if data_idx.is_empty() {
        bail!("--context-columns takes every column: nothing is left to model");
    }
    Ok((table.select_columns(&data_idx)?, Some(table.select_columns(&ctx_idx)?)))
}

/// Checks that every value of `table` is an integer pixel value in `[0, levels)`, naming the
/// first row and column that is not (image flows model 8-bit data).
pub fn check_pixels(table: &Table, levels: u32) -> Result<()> {
    let max = f64::from(levels - 1);
    for r in 0..table.rows {
        for (c, &v) in table.row(r).iter().enumerate() {
            if !(v.fract() == 0.0 && (0.0..=max).contains(&v)) {
                bail!(
                    "{}: row {}, column {} has {v}: image flows take integer pixel values in \
                     [0, {}] (8-bit images, e.g. IDX or NPY of uint8)",
                    table.source,
                    r + 1,
                    table.columns.get(c).map_or_else(|| c.to_string(), |n| n.clone()),
                    levels - 1
                );
            }
        }
    }
    Ok(())
}
