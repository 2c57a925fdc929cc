//! Moment constraints `E_p[T_k(x)] = m_k` and their JSON file form.
//!
//! ```text
//! {"dim": 2,
//!  "constraints": [
//!    {"statistic": "moment",        "powers": [1, 0], "target": 0.0},
//!    {"statistic": "moment",        "powers": [1, 1], "target": 0.5},
//!    {"statistic": "log-moment",    "powers": [1, 0], "target": -1.2},
//!    {"statistic": "log-one-minus", "powers": [0, 1], "target": -0.7},
//!    {"statistic": "log-remainder",                   "target": -2.0}
//!  ]}
//! ```
//!
//! Every error names the offending place (`constraints[2].powers`) and what a valid value is.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::bijections::Support;
use crate::{Error, Result};

/// A statistic `T(x)` of one sample `x` in `D` coordinates.
#[derive(Debug, Clone, PartialEq)]
pub enum Statistic {
    /// `"moment"`: `prod_i x_i^{p_i}`. Non-negative integer powers work on any support; other
    /// powers need a support with `x_i > 0`.
    Moment {
        /// `p`, one per coordinate.
        powers: Vec<f64>,
    },
    /// `"log-moment"`: `sum_i p_i log x_i`; needs `x_i > 0` (positive, simplex, or an interval
    /// with `low >= 0`).
    LogMoment {
        /// `p`, one per coordinate.
        powers: Vec<f64>,
    },
    /// `"log-one-minus"`: `sum_i p_i log(1 - x_i)`; needs `x_i < 1` (simplex, or an interval
    /// with `high <= 1`). With `E[log x]` it fixes a Beta on `(0, 1)`.
    LogOneMinus {
        /// `p`, one per coordinate.
        powers: Vec<f64>,
    },
    /// `"log-remainder"`: `log(1 - sum_i x_i)`, the log of the simplex's implicit last
    /// probability `x_{D+1}`; needs the simplex. With `E[log x_i]` for `i <= D` it fixes a
    /// Dirichlet on all `D + 1` probabilities.
    LogRemainder,
}

impl Statistic {
    /// The name used in constraint files.
    pub fn name(&self) -> &'static str {
        match self {
            Statistic::Moment { .. } => "moment",
            Statistic::LogMoment { .. } => "log-moment",
            Statistic::LogOneMinus { .. } => "log-one-minus",
            Statistic::LogRemainder => "log-remainder",
        }
    }

    /// The powers, for the statistics that have them.
    pub fn powers(&self) -> Option<&[f64]> {
        match self {
            Statistic::Moment { powers }
            | Statistic::LogMoment { powers }
            | Statistic::LogOneMinus { powers } => Some(powers),
            Statistic::LogRemainder => None,
        }
    }

    /// A short formula, e.g. `E[x1^2 x2]` or `E[log x1]`, for reports.
    pub fn describe(&self) -> String {
        let terms = |powers: &[f64], f: &dyn Fn(usize) -> String, sep: &str| -> String {
            let parts: Vec<String> = powers
                .iter()
                .enumerate()
                .filter(|(_, &p)| p != 0.0)
                .map(|(i, &p)| match (p == 1.0, sep) {
                    (true, _) => f(i + 1),
                    (false, " ") => format!("{}^{p}", f(i + 1)),
                    (false, _) => format!("{p} {}", f(i + 1)),
                })
                .collect();
            if parts.is_empty() {
                "1".into()
            } else {
                parts.join(sep)
            }
        };
        match self {
            Statistic::Moment { powers } => {
                format!("E[{}]", terms(powers, &|i| format!("x{i}"), " "))
            }
            Statistic::LogMoment { powers } => {
                format!("E[{}]", terms(powers, &|i| format!("log x{i}"), " + "))
            }
            Statistic::LogOneMinus { powers } => {
                format!("E[{}]", terms(powers, &|i| format!("log(1 - x{i})"), " + "))
            }
            Statistic::LogRemainder => "E[log(1 - sum x)]".into(),
        }
    }
}

/// One constraint `E_p[T(x)] = target`.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// The statistic `T`.
    pub statistic: Statistic,
    /// Its required expectation (finite).
    pub target: f64,
}

/// A validated set of constraints on samples in `dim` coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraints {
    dim: usize,
    constraints: Vec<Constraint>,
}

fn invalid(place: impl Into<String>, value: impl std::fmt::Display, reason: &str) -> Error {
    Error::config(&place.into(), value, reason)
}

impl Constraints {
    /// Validates `constraints` for samples in `dim >= 1` coordinates: at least one constraint,
    /// finite targets, one finite power per coordinate, not all of them zero.
    pub fn new(dim: usize, constraints: Vec<Constraint>) -> Result<Self> {
        if dim == 0 {
            return Err(invalid("dim", dim, "at least 1"));
        }
        if constraints.is_empty() {
            return Err(invalid("constraints", "[]", "give at least one constraint"));
        }
        for (k, c) in constraints.iter().enumerate() {
            if !c.target.is_finite() {
                return Err(invalid(
                    format!("constraints[{k}].target"),
                    c.target,
                    "a finite number",
                ));
            }
            if let Some(powers) = c.statistic.powers() {
                let place = format!("constraints[{k}].powers");
                let shown = format!("{powers:?}");
                if powers.len() != dim {
                    return Err(invalid(
                        place,
                        shown,
                        &format!(
                            "has {} entries but dim is {dim}: give one per coordinate",
                            powers.len()
                        ),
                    ));
                }
                if powers.iter().any(|p| !p.is_finite()) {
                    return Err(invalid(place, shown, "every power must be a finite number"));
                }
                if powers.iter().all(|&p| p == 0.0) {
                    return Err(invalid(place, shown, "all zero: the statistic would be constant"));
                }
            }
        }
        Ok(Self { dim, constraints })
    }

    /// Parses the JSON form (see the module docs). Unknown keys are errors, so a typo never
    /// drops a constraint silently.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)?;
        let top = value.as_object().ok_or_else(|| {
            invalid(
                "constraints file",
                kind(&value),
                "expected an object {\"dim\": D, \"constraints\": [...]}",
            )
        })?;
        reject_unknown(top, &["dim", "constraints"], "")?;
        let dim = match top.get("dim") {
            None => return Err(invalid("dim", "missing", "give the number of coordinates D >= 1")),
            Some(v) => v
                .as_u64()
                .filter(|&d| d >= 1)
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| invalid("dim", v, "an integer >= 1"))?,
        };
        let list = match top.get("constraints") {
            None => return Err(invalid("constraints", "missing", "give a list of constraints")),
            Some(v) => v.as_array().ok_or_else(|| invalid("constraints", kind(v), "a list"))?,
        };
        let constraints = list
            .iter()
            .enumerate()
            .map(|(k, item)| parse_constraint(k, item))
            .collect::<Result<Vec<_>>>()?;
        Self::new(dim, constraints)
    }

    /// Reads and parses a constraint file ([`Constraints::from_json`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text)
    }

    /// The JSON form, which [`Constraints::from_json`] reads back.
    pub fn to_json(&self) -> Value {
        let list: Vec<Value> = self
            .constraints
            .iter()
            .map(|c| {
                let mut m = Map::new();
                m.insert("statistic".into(), json!(c.statistic.name()));
                if let Some(p) = c.statistic.powers() {
                    m.insert("powers".into(), json!(p));
                }
                m.insert("target".into(), json!(c.target));
                Value::Object(m)
            })
            .collect();
        json!({"dim": self.dim, "constraints": list})
    }

    /// The number of coordinates `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The constraints, in file order.
    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    /// The number of constraints `K`.
    pub fn len(&self) -> usize {
        self.constraints.len()
    }

    /// Always false: a constraint set has at least one constraint.
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    /// The targets `m_k`, in order.
    pub fn targets(&self) -> Vec<f64> {
        self.constraints.iter().map(|c| c.target).collect()
    }

    /// Checks that every statistic is defined on all of `support` (logs of positive values,
    /// fractional powers of positive values): an undefined one would turn the fit into NaNs.
    pub fn check_support(&self, support: Support) -> Result<()> {
        let (positive, below_one) = match support {
            Support::Real => (false, false),
            Support::Positive => (true, false),
            Support::Interval { low, high } => (low >= 0.0, high <= 1.0),
            Support::Simplex => (true, true),
        };
        let shown = support_name(support);
        for (k, c) in self.constraints.iter().enumerate() {
            let place = format!("constraints[{k}].statistic");
            let need = match &c.statistic {
                Statistic::Moment { powers } => {
                    let whole = powers.iter().all(|&p| p >= 0.0 && p.fract() == 0.0);
                    (!whole && !positive)
                        .then_some("negative or fractional powers need x > 0: use --support positive, simplex or interval:A,B with A >= 0")
                }
                Statistic::LogMoment { .. } => (!positive).then_some(
                    "log x needs x > 0: use --support positive, simplex or interval:A,B with A >= 0",
                ),
                Statistic::LogOneMinus { .. } => (!below_one).then_some(
                    "log(1 - x) needs x < 1: use --support simplex or interval:A,B with B <= 1",
                ),
                Statistic::LogRemainder => (support != Support::Simplex)
                    .then_some("log(1 - sum x) is the simplex's last coordinate: use --support simplex"),
            };
            if let Some(reason) = need {
                return Err(invalid(
                    place,
                    format!("{} on support {shown}", c.statistic.name()),
                    reason,
                ));
            }
        }
        Ok(())
    }
}

fn support_name(support: Support) -> String {
    match support {
        Support::Real => "real".into(),
        Support::Positive => "positive".into(),
        Support::Interval { low, high } => format!("interval:{low},{high}"),
        Support::Simplex => "simplex".into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn reject_unknown(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<()> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(invalid(
            format!("{prefix}{key}"),
            obj.get(key).map(|v| v.to_string()).unwrap_or_default(),
            &format!("unknown key; expected one of: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

const STATISTICS: &str = "moment, log-moment, log-one-minus, log-remainder";

fn parse_constraint(k: usize, item: &Value) -> Result<Constraint> {
    let here = format!("constraints[{k}]");
    let obj = item.as_object().ok_or_else(|| {
        invalid(&here, kind(item), "an object {\"statistic\": ..., \"target\": ...}")
    })?;
    let name = match obj.get("statistic") {
        None => {
            return Err(invalid(
                format!("{here}.statistic"),
                "missing",
                &format!("one of {STATISTICS}"),
            ))
        }
        Some(v) => v.as_str().ok_or_else(|| {
            invalid(format!("{here}.statistic"), v, &format!("one of {STATISTICS}"))
        })?,
    };
    let powers = || -> Result<Vec<f64>> {
        let place = format!("{here}.powers");
        let v = obj
            .get("powers")
            .ok_or_else(|| invalid(&place, "missing", "a list of numbers, one per coordinate"))?;
        let list = v.as_array().ok_or_else(|| invalid(&place, v, "a list of numbers"))?;
        list.iter()
            .enumerate()
            .map(|(i, p)| p.as_f64().ok_or_else(|| invalid(format!("{place}[{i}]"), p, "a number")))
            .collect()
    };
    let statistic = match name {
        "moment" => Statistic::Moment { powers: powers()? },
        "log-moment" => Statistic::LogMoment { powers: powers()? },
        "log-one-minus" => Statistic::LogOneMinus { powers: powers()? },
        "log-remainder" => Statistic::LogRemainder,
        other => {
            return Err(invalid(
                format!("{here}.statistic"),
                other,
                &format!("unknown statistic; expected one of {STATISTICS}"),
            ))
        }
    };
    let known: &[&str] = match statistic {
        Statistic::LogRemainder => &["statistic", "target"],
        _ => &["statistic", "powers", "target"],
    };
    reject_unknown(obj, known, &format!("{here}."))?;
    let target = match obj.get("target") {
        None => return Err(invalid(format!("{here}.target"), "missing", "a finite number")),
        // JSON has no NaN or infinity; a huge literal parses to infinity and is caught in `new`.
        Some(v) => {
            v.as_f64().ok_or_else(|| invalid(format!("{here}.target"), v, "a finite number"))?
        }
    };
    Ok(Constraint { statistic, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_FORM: &str = r#"{"dim": 2,
     "constraints": [
       {"statistic": "moment",     "powers": [1, 0], "target": 0.0},
       {"statistic": "moment",     "powers": [1, 1], "target": 0.5},
       {"statistic": "log-moment", "powers": [1, 0], "target": -1.2}
     ]}"#;

    fn message(text: &str) -> String {
        Constraints::from_json(text).expect_err(text).to_string()
    }

    #[test]
    fn the_issue_form_parses_and_round_trips() -> Result<()> {
        let c = Constraints::from_json(ISSUE_FORM)?;
        assert_eq!(c.dim(), 2);
        assert_eq!(c.targets(), vec![0.0, 0.5, -1.2]);
        assert_eq!(c.constraints()[1].statistic, Statistic::Moment { powers: vec![1.0, 1.0] });
        assert_eq!(c.constraints()[1].statistic.describe(), "E[x1 x2]");
        assert_eq!(Constraints::from_json(&c.to_json().to_string())?, c);
        let extended = r#"{"dim": 2, "constraints": [
            {"statistic": "log-one-minus", "powers": [0, 2], "target": -1},
            {"statistic": "log-remainder", "target": -2}]}"#;
        let c = Constraints::from_json(extended)?;
        assert_eq!(c.constraints()[1].statistic, Statistic::LogRemainder);
        assert_eq!(c.constraints()[0].statistic.describe(), "E[2 log(1 - x2)]");
        Ok(())
    }

    #[test]
    fn bad_files_say_where_and_why() {
        let cases = [
            (r#"{"dim": 0, "constraints": []}"#, "dim"),
            (r#"{"dim": 2.5, "constraints": []}"#, "dim"),
            (r#"{"constraints": []}"#, "dim = missing"),
            (r#"{"dim": 2, "constraints": []}"#, "at least one"),
            (
                r#"{"dim": 2, "constraints": [{"statistic": "moment", "powers": [1], "target": 0}]}"#,
                "constraints[0].powers = [1.0]: has 1 entries but dim is 2",
            ),
            (
                r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": [1], "target": 0},
                {"statistic": "cumulant", "powers": [1], "target": 0}]}"#,
                "constraints[1].statistic = cumulant: unknown statistic",
            ),
            (
                r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": [1], "target": 1e999}]}"#,
                "number out of range at line 1",
            ),
            (
                r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": [1], "target": "x"}]}"#,
                "constraints[0].target",
            ),
            (
                r#"{"dim": 1, "constraints": [{"statistic": "moment", "power": [1], "target": 0}]}"#,
                "constraints[0].powers = missing",
            ),
            (
                r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": [1], "target": 0, "weight": 2}]}"#,
                "constraints[0].weight",
            ),
            (
                r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": [0], "target": 0}]}"#,
                "all zero",
            ),
            (
                r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": ["a"], "target": 0}]}"#,
                "constraints[0].powers[0]",
            ),
            (r#"{"dim": 1, "extra": 1, "constraints": []}"#, "extra"),
            (r#"{"dim": 1, "constraints": [1]}"#, "constraints[0] = a number"),
            (r#"{"dim": 1, "constraints": ["#, "line 1"),
        ];
        for (text, want) in cases {
            let msg = message(text);
            assert!(msg.contains(want), "{text}\n-> {msg}\nlacks `{want}`");
        }
    }

    #[test]
    fn the_api_checks_what_the_file_parser_cannot_reach() {
        let moment = Statistic::Moment { powers: vec![1.0] };
        let err = Constraints::new(1, vec![Constraint { statistic: moment, target: f64::NAN }])
            .expect_err("NaN target")
            .to_string();
        assert!(err.contains("constraints[0].target = NaN: a finite number"), "{err}");
        let inf_power = Statistic::LogMoment { powers: vec![f64::INFINITY] };
        assert!(
            Constraints::new(1, vec![Constraint { statistic: inf_power, target: 0.0 }]).is_err()
        );
    }

    #[test]
    fn statistics_must_be_defined_on_the_support() -> Result<()> {
        let c = Constraints::from_json(ISSUE_FORM)?;
        let err = c.check_support(Support::Real).expect_err("log on R").to_string();
        assert!(err.contains("constraints[2].statistic") && err.contains("x > 0"), "{err}");
        c.check_support(Support::Positive)?;
        c.check_support(Support::Interval { low: 0.0, high: 3.0 })?;
        let one_minus = Constraints::new(
            1,
            vec![Constraint {
                statistic: Statistic::LogOneMinus { powers: vec![1.0] },
                target: -1.0,
            }],
        )?;
        assert!(one_minus.check_support(Support::Interval { low: 0.0, high: 2.0 }).is_err());
        one_minus.check_support(Support::Interval { low: 0.0, high: 1.0 })?;
        let rest = Constraints::new(
            1,
            vec![Constraint { statistic: Statistic::LogRemainder, target: -1.0 }],
        )?;
        assert!(rest.check_support(Support::Positive).is_err());
        rest.check_support(Support::Simplex)?;
        let sqrt = Constraints::new(
            1,
            vec![Constraint { statistic: Statistic::Moment { powers: vec![0.5] }, target: 1.0 }],
        )?;
        assert!(sqrt.check_support(Support::Real).is_err());
        sqrt.check_support(Support::Positive)?;
        Ok(())
    }
}
