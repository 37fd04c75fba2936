//! `calculator`: a safe arithmetic evaluator. Expressions are parsed, never executed.

use std::process::ExitCode;

use berth_plugin_sdk::{Context, Error, Plugin};
use serde::{Deserialize, Serialize};
use serde_json::Number;

mod expr;

/// Input of `evaluate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateInput {
    expression: String,
}

/// Output of `evaluate`.
#[derive(Serialize, Debug, PartialEq)]
struct EvaluateOutput {
    result: Number,
}

/// Largest integer a 64-bit float holds exactly.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

async fn evaluate(input: EvaluateInput, _ctx: Context) -> Result<EvaluateOutput, Error> {
    let value = expr::evaluate(&input.expression).map_err(|e| match e {
        expr::EvalError::TooLong { .. } => Error::invalid_input(e.to_string()),
        _ => Error::unprocessable(e.code(), e.to_string()),
    })?;
    Ok(EvaluateOutput {
        result: to_json_number(value),
    })
}

/// Whole results are answered as JSON integers (`14`, not `14.0`).
fn to_json_number(value: f64) -> Number {
    if value.fract() == 0.0 && value.abs() <= EXACT_INTEGER {
        Number::from(value as i64)
    } else {
        // `evaluate` only returns finite values, which always have a JSON number.
        Number::from_f64(value).unwrap_or_else(|| Number::from(0))
    }
}

fn plugin() -> Plugin {
    Plugin::new("calculator", env!("CARGO_PKG_VERSION")).capability("evaluate", evaluate)
}

fn main() -> ExitCode {
    plugin().run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn run(expression: &str) -> Result<serde_json::Value, Error> {
        evaluate(
            EvaluateInput {
                expression: expression.into(),
            },
            Context::new(),
        )
        .await
        .map(|o| serde_json::to_value(o).unwrap())
    }

    #[tokio::test]
    async fn whole_results_are_json_integers() {
        assert_eq!(run("2*(3+4)").await.unwrap(), json!({"result": 14}));
        assert_eq!(
            run("sqrt(16) + max(1, 2^3)").await.unwrap(),
            json!({"result": 12})
        );
        assert_eq!(run("-2^2").await.unwrap(), json!({"result": -4}));
    }

    #[tokio::test]
    async fn fractional_results_stay_floats() {
        assert_eq!(run("1/4").await.unwrap(), json!({"result": 0.25}));
        assert_eq!(
            run("2^60").await.unwrap(),
            json!({"result": 1152921504606846976.0})
        );
    }

    #[tokio::test]
    async fn evaluation_errors_are_422_with_their_code() {
        let e = run("1/0").await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (422, "division_by_zero"));
        let e = run("foo(1)").await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (422, "unknown_identifier"));
    }

    #[tokio::test]
    async fn too_long_input_is_400() {
        let e = run(&"1".repeat(expr::MAX_LEN + 1)).await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "invalid_input"));
    }
}
