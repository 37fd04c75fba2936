//! A small arithmetic language, parsed by recursive descent and evaluated on `f64`.
//!
//! Grammar (lowest precedence first):
//!
//! ```text
//! expr    = term { ("+" | "-") term }
//! term    = unary { ("*" | "/" | "%") unary }
//! unary   = ("-" | "+") unary | power
//! power   = primary [ "^" unary ]            right-associative; -2^2 = -4
//! primary = number | constant | call | "(" expr ")"
//! call    = identifier "(" [ expr { "," expr } ] ")"
//! ```
//!
//! Nothing is executed but arithmetic: identifiers resolve only to the constants and
//! functions listed in [`CONSTANTS`] and [`FUNCTIONS`].

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting: each parenthesis or call counts two levels, each sign or power one.
pub const MAX_DEPTH: usize = 128;
/// Most arguments to one call.
pub const MAX_ARGS: usize = 64;

/// Named constants.
pub const CONSTANTS: &[(&str, f64)] = &[
    ("pi", std::f64::consts::PI),
    ("e", std::f64::consts::E),
    ("tau", std::f64::consts::TAU),
];

/// Functions and how many arguments each takes (`None`: one or more).
pub const FUNCTIONS: &[(&str, Option<usize>)] = &[
    ("sqrt", Some(1)),
    ("cbrt", Some(1)),
    ("abs", Some(1)),
    ("sin", Some(1)),
    ("cos", Some(1)),
    ("tan", Some(1)),
    ("asin", Some(1)),
    ("acos", Some(1)),
    ("atan", Some(1)),
    ("exp", Some(1)),
    ("ln", Some(1)),
    ("log", None),
    ("log2", Some(1)),
    ("round", Some(1)),
    ("floor", Some(1)),
    ("ceil", Some(1)),
    ("trunc", Some(1)),
    ("min", None),
    ("max", None),
    ("pow", Some(2)),
];

/// Why an expression has no value.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalError {
    /// Longer than [`MAX_LEN`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep {
        /// Byte offset where the limit was hit.
        at: usize,
    },
    /// Not in the grammar.
    Syntax {
        /// Byte offset of the problem.
        at: usize,
        /// What was expected.
        message: String,
    },
    /// A name that is neither a constant nor a function.
    UnknownIdentifier {
        /// The name.
        name: String,
        /// A known name it resembles.
        suggestion: Option<&'static str>,
    },
    /// A function called with the wrong number of arguments.
    Arity {
        /// The function.
        function: &'static str,
        /// What it takes.
        expected: String,
        /// What it got.
        got: usize,
    },
    /// `x / 0` or `x % 0`.
    DivisionByZero,
    /// A result too large for a 64-bit float.
    Overflow,
    /// A function outside its domain: `sqrt(-1)`, `ln(0)`.
    Domain {
        /// The function and argument, as written.
        what: String,
    },
}

impl EvalError {
    /// The stable error code answered to callers.
    pub fn code(&self) -> &'static str {
        match self {
            EvalError::TooLong { .. } => "too_long",
            EvalError::TooDeep { .. } => "too_deep",
            EvalError::Syntax { .. } => "syntax_error",
            EvalError::UnknownIdentifier { .. } => "unknown_identifier",
            EvalError::Arity { .. } => "wrong_argument_count",
            EvalError::DivisionByZero => "division_by_zero",
            EvalError::Overflow => "overflow",
            EvalError::Domain { .. } => "domain_error",
        }
    }
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::TooLong { len } => write!(
                f,
                "the expression is {len} bytes long; the limit is {MAX_LEN}"
            ),
            EvalError::TooDeep { at } => write!(
                f,
                "nesting deeper than {MAX_DEPTH} levels at byte {at}; simplify the expression"
            ),
            EvalError::Syntax { at, message } => write!(f, "at byte {at}: {message}"),
            EvalError::UnknownIdentifier { name, suggestion } => {
                write!(f, "unknown identifier {name:?}")?;
                if let Some(s) = suggestion {
                    write!(f, " (did you mean {s:?}?)")?;
                }
                Ok(())
            }
            EvalError::Arity {
                function,
                expected,
                got,
            } => write!(f, "{function}() takes {expected}, got {got}"),
            EvalError::DivisionByZero => f.write_str("division by zero"),
            EvalError::Overflow => f.write_str("the result is too large for a 64-bit float"),
            EvalError::Domain { what } => write!(f, "{what} is undefined"),
        }
    }
}

impl std::error::Error for EvalError {}

/// Evaluates `input`.
pub fn evaluate(input: &str) -> Result<f64, EvalError> {
    if input.len() > MAX_LEN {
        return Err(EvalError::TooLong { len: input.len() });
    }
    let tokens = lex(input)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        end: input.len(),
    };
    let value = parser.expr()?;
    if let Some(t) = parser.peek() {
        return Err(EvalError::Syntax {
            at: t.at,
            message: format!("unexpected {}", t.kind.describe()),
        });
    }
    finite(value)
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Number(f64),
    Ident(String),
    Op(char),
    LParen,
    RParen,
    Comma,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Number(n) => format!("number {n}"),
            Kind::Ident(s) => format!("name {s:?}"),
            Kind::Op(c) => format!("operator {c:?}"),
            Kind::LParen => "\"(\"".into(),
            Kind::RParen => "\")\"".into(),
            Kind::Comma => "\",\"".into(),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    at: usize,
}

fn lex(input: &str) -> Result<Vec<Token>, EvalError> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let at = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'0'..=b'9' | b'.' => {
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                // An exponent: 1e3, 2.5E-4.
                if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                    let mut j = i + 1;
                    if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                        j += 1;
                    }
                    if j < bytes.len() && bytes[j].is_ascii_digit() {
                        while j < bytes.len() && bytes[j].is_ascii_digit() {
                            j += 1;
                        }
                        i = j;
                    }
                }
                let text = &input[at..i];
                let n: f64 = text.parse().map_err(|_| EvalError::Syntax {
                    at,
                    message: format!("{text:?} is not a number"),
                })?;
                tokens.push(Token {
                    kind: Kind::Number(n),
                    at,
                });
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                tokens.push(Token {
                    kind: Kind::Ident(input[at..i].to_ascii_lowercase()),
                    at,
                });
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => {
                i += 1;
                tokens.push(Token {
                    kind: Kind::Op(c as char),
                    at,
                });
            }
            b'(' => {
                i += 1;
                tokens.push(Token {
                    kind: Kind::LParen,
                    at,
                });
            }
            b')' => {
                i += 1;
                tokens.push(Token {
                    kind: Kind::RParen,
                    at,
                });
            }
            b',' => {
                i += 1;
                tokens.push(Token {
                    kind: Kind::Comma,
                    at,
                });
            }
            _ => {
                let ch = input[at..].chars().next().unwrap_or('?');
                return Err(EvalError::Syntax {
                    at,
                    message: format!(
                        "unexpected character {ch:?}; use numbers, + - * / % ^, parentheses, functions and pi or e"
                    ),
                });
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn at(&self) -> usize {
        self.peek().map_or(self.end, |t| t.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, kind: &Kind) -> bool {
        if self.peek().map(|t| &t.kind) == Some(kind) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), EvalError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(EvalError::TooDeep { at: self.at() });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn expr(&mut self) -> Result<f64, EvalError> {
        let mut value = self.term()?;
        loop {
            if self.eat(&Kind::Op('+')) {
                value = finite(value + self.term()?)?;
            } else if self.eat(&Kind::Op('-')) {
                value = finite(value - self.term()?)?;
            } else {
                return Ok(value);
            }
        }
    }

    fn term(&mut self) -> Result<f64, EvalError> {
        let mut value = self.unary()?;
        loop {
            if self.eat(&Kind::Op('*')) {
                value = finite(value * self.unary()?)?;
            } else if self.eat(&Kind::Op('/')) {
                let rhs = self.unary()?;
                if rhs == 0.0 {
                    return Err(EvalError::DivisionByZero);
                }
                value = finite(value / rhs)?;
            } else if self.eat(&Kind::Op('%')) {
                let rhs = self.unary()?;
                if rhs == 0.0 {
                    return Err(EvalError::DivisionByZero);
                }
                value = finite(value % rhs)?;
            } else {
                return Ok(value);
            }
        }
    }

    fn unary(&mut self) -> Result<f64, EvalError> {
        self.enter()?;
        let value = if self.eat(&Kind::Op('-')) {
            self.unary().map(|v| -v)
        } else if self.eat(&Kind::Op('+')) {
            self.unary()
        } else {
            self.power()
        };
        self.leave();
        value
    }

    fn power(&mut self) -> Result<f64, EvalError> {
        let base = self.primary()?;
        if self.eat(&Kind::Op('^')) {
            let exponent = self.unary()?;
            return pow(base, exponent);
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<f64, EvalError> {
        let at = self.at();
        match self.next() {
            Some(Token {
                kind: Kind::Number(n),
                ..
            }) => Ok(n),
            Some(Token {
                kind: Kind::LParen, ..
            }) => {
                self.enter()?;
                let value = self.expr()?;
                self.expect_close("to close the parenthesis")?;
                self.leave();
                Ok(value)
            }
            Some(Token {
                kind: Kind::Ident(name),
                ..
            }) => {
                if self.eat(&Kind::LParen) {
                    self.enter()?;
                    let value = self.call(&name, at)?;
                    self.leave();
                    Ok(value)
                } else if let Some((_, v)) = CONSTANTS.iter().find(|(n, _)| *n == name) {
                    Ok(*v)
                } else if FUNCTIONS.iter().any(|(n, _)| *n == name) {
                    Err(EvalError::Syntax {
                        at,
                        message: format!("{name} is a function: write {name}(…)"),
                    })
                } else {
                    Err(unknown(name))
                }
            }
            Some(t) => Err(EvalError::Syntax {
                at: t.at,
                message: format!(
                    "expected a number, a name or \"(\", found {}",
                    t.kind.describe()
                ),
            }),
            None => Err(EvalError::Syntax {
                at,
                message: "the expression ends too early".into(),
            }),
        }
    }

    fn expect_close(&mut self, why: &str) -> Result<(), EvalError> {
        if self.eat(&Kind::RParen) {
            return Ok(());
        }
        let at = self.at();
        let found = self
            .peek()
            .map_or("the end".to_owned(), |t| t.kind.describe());
        Err(EvalError::Syntax {
            at,
            message: format!("expected \")\" {why}, found {found}"),
        })
    }

    fn call(&mut self, name: &str, at: usize) -> Result<f64, EvalError> {
        let Some(&(function, arity)) = FUNCTIONS.iter().find(|(n, _)| *n == name) else {
            return Err(if CONSTANTS.iter().any(|(n, _)| *n == name) {
                EvalError::Syntax {
                    at,
                    message: format!("{name} is a constant, not a function"),
                }
            } else {
                unknown(name.to_owned())
            });
        };
        let mut args = Vec::new();
        if !self.eat(&Kind::RParen) {
            loop {
                if args.len() == MAX_ARGS {
                    return Err(EvalError::Syntax {
                        at: self.at(),
                        message: format!("more than {MAX_ARGS} arguments"),
                    });
                }
                args.push(self.expr()?);
                if self.eat(&Kind::Comma) {
                    continue;
                }
                self.expect_close(&format!("after the arguments of {function}()"))?;
                break;
            }
        }
        apply(function, arity, &args)
    }
}

fn unknown(name: String) -> EvalError {
    let suggestion = CONSTANTS
        .iter()
        .map(|(n, _)| *n)
        .chain(FUNCTIONS.iter().map(|(n, _)| *n))
        .filter(|known| known.len() > 1)
        .map(|known| (edit_distance(&name, known), known))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k);
    EvalError::UnknownIdentifier { name, suggestion }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn finite(v: f64) -> Result<f64, EvalError> {
    if v.is_finite() {
        Ok(v)
    } else if v.is_nan() {
        Err(EvalError::Domain {
            what: "the result".into(),
        })
    } else {
        Err(EvalError::Overflow)
    }
}

fn pow(base: f64, exponent: f64) -> Result<f64, EvalError> {
    if base == 0.0 && exponent < 0.0 {
        return Err(EvalError::DivisionByZero);
    }
    let v = base.powf(exponent);
    if v.is_nan() {
        return Err(EvalError::Domain {
            what: format!("{base}^{exponent}"),
        });
    }
    finite(v)
}

fn apply(function: &'static str, arity: Option<usize>, args: &[f64]) -> Result<f64, EvalError> {
    let arity_error = |expected: &str| EvalError::Arity {
        function,
        expected: expected.to_owned(),
        got: args.len(),
    };
    match arity {
        Some(n) if args.len() != n => {
            return Err(arity_error(if n == 1 {
                "1 argument"
            } else {
                "2 arguments"
            }));
        }
        None if args.is_empty() => return Err(arity_error("at least 1 argument")),
        _ => {}
    }
    let x = args[0];
    let domain = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(EvalError::Domain {
                what: format!("{function}({x})"),
            })
        }
    };
    let value = match function {
        "sqrt" => {
            domain(x >= 0.0)?;
            x.sqrt()
        }
        "cbrt" => x.cbrt(),
        "abs" => x.abs(),
        "sin" => x.sin(),
        "cos" => x.cos(),
        "tan" => x.tan(),
        "asin" => {
            domain((-1.0..=1.0).contains(&x))?;
            x.asin()
        }
        "acos" => {
            domain((-1.0..=1.0).contains(&x))?;
            x.acos()
        }
        "atan" => x.atan(),
        "exp" => x.exp(),
        "ln" => {
            domain(x > 0.0)?;
            x.ln()
        }
        "log2" => {
            domain(x > 0.0)?;
            x.log2()
        }
        "log" => {
            domain(x > 0.0)?;
            match args {
                [_] => x.log10(),
                [_, base] if *base > 0.0 && *base != 1.0 => x.log(*base),
                [_, base] => {
                    return Err(EvalError::Domain {
                        what: format!("log({x}, {base})"),
                    });
                }
                _ => return Err(arity_error("1 or 2 arguments")),
            }
        }
        "round" => x.round(),
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        "trunc" => x.trunc(),
        "min" => args.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => args.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "pow" => return pow(args[0], args[1]),
        _ => return Err(unknown(function.to_owned())),
    };
    finite(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(s: &str) -> f64 {
        evaluate(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> EvalError {
        match evaluate(s) {
            Ok(v) => panic!("{s} evaluated to {v}, expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn precedence_follows_arithmetic() {
        assert_eq!(eval("2+3*4"), 14.0);
        assert_eq!(eval("(2+3)*4"), 20.0);
        assert_eq!(eval("10-4-3"), 3.0);
        assert_eq!(eval("100/10/5"), 2.0);
        assert_eq!(eval("7 % 4 * 2"), 6.0);
        assert_eq!(eval("2*(3+4)"), 14.0);
    }

    #[test]
    fn power_is_right_associative_and_binds_tighter_than_unary_minus() {
        assert_eq!(eval("2^3^2"), 512.0);
        assert_eq!(eval("-2^2"), -4.0);
        assert_eq!(eval("2^-1"), 0.5);
        assert_eq!(eval("(-2)^2"), 4.0);
    }

    #[test]
    fn numbers_take_decimals_and_exponents() {
        assert_eq!(eval("1.5e3"), 1500.0);
        assert_eq!(eval("2.5E-1"), 0.25);
        assert_eq!(eval(".5 + 0.25"), 0.75);
    }

    #[test]
    fn functions_and_constants() {
        assert_eq!(eval("sqrt(16) + max(1, 2^3)"), 12.0);
        assert_eq!(eval("min(3, 1, 2)"), 1.0);
        assert_eq!(eval("abs(-3)"), 3.0);
        assert_eq!(eval("round(2.5)"), 3.0);
        assert_eq!(eval("floor(-1.5)"), -2.0);
        assert_eq!(eval("log(1000)"), 3.0);
        assert_eq!(eval("log(8, 2)"), 3.0);
        assert_eq!(eval("ln(e)"), 1.0);
        assert!((eval("sin(pi/2)") - 1.0).abs() < 1e-12);
        assert!((eval("cos(0)") - 1.0).abs() < 1e-12);
        assert!(eval("tan(0)").abs() < 1e-12);
        assert_eq!(eval("PI"), std::f64::consts::PI);
    }

    #[test]
    fn division_and_remainder_by_zero_are_errors() {
        assert_eq!(err("1/0"), EvalError::DivisionByZero);
        assert_eq!(err("1 % (2-2)"), EvalError::DivisionByZero);
        assert_eq!(err("0^-1"), EvalError::DivisionByZero);
    }

    #[test]
    fn overflow_is_an_error_not_infinity() {
        assert_eq!(err("10^400"), EvalError::Overflow);
        assert_eq!(err("1e308 * 10"), EvalError::Overflow);
        assert_eq!(err("exp(1000)"), EvalError::Overflow);
    }

    #[test]
    fn out_of_domain_is_an_error_not_nan() {
        assert_eq!(err("sqrt(-1)").code(), "domain_error");
        assert_eq!(err("ln(0)").code(), "domain_error");
        assert_eq!(err("(-8)^(1/3)").code(), "domain_error");
        assert_eq!(err("log(10, 1)").code(), "domain_error");
    }

    #[test]
    fn unknown_identifiers_are_named_with_a_suggestion() {
        assert_eq!(
            err("sqr(4)"),
            EvalError::UnknownIdentifier {
                name: "sqr".into(),
                suggestion: Some("sqrt")
            }
        );
        assert_eq!(err("x + 1").code(), "unknown_identifier");
        assert_eq!(err("system(1)").code(), "unknown_identifier");
    }

    #[test]
    fn wrong_argument_counts_are_errors() {
        assert_eq!(err("sqrt(1, 2)").code(), "wrong_argument_count");
        assert_eq!(err("max()").code(), "wrong_argument_count");
        assert_eq!(err("pow(2)").code(), "wrong_argument_count");
    }

    #[test]
    fn syntax_errors_name_the_offset() {
        assert_eq!(
            err("1 +"),
            EvalError::Syntax {
                at: 3,
                message: "the expression ends too early".into()
            }
        );
        assert!(matches!(err("(1 + 2"), EvalError::Syntax { at: 6, .. }));
        assert!(matches!(err("1 2"), EvalError::Syntax { at: 2, .. }));
        assert!(matches!(err("2 $ 3"), EvalError::Syntax { at: 2, .. }));
        assert!(matches!(err("1..2"), EvalError::Syntax { at: 0, .. }));
        assert!(matches!(err(""), EvalError::Syntax { .. }));
        assert!(matches!(err("pi(2)"), EvalError::Syntax { .. }));
        assert!(matches!(err("sqrt + 1"), EvalError::Syntax { .. }));
    }

    #[test]
    fn input_over_the_length_limit_is_refused_before_parsing() {
        let long = "1+".repeat(MAX_LEN / 2) + "1";
        assert_eq!(err(&long), EvalError::TooLong { len: long.len() });
        let fits = format!("{}1", "1+".repeat((MAX_LEN - 1) / 2));
        assert!(fits.len() <= MAX_LEN);
        assert_eq!(eval(&fits), ((MAX_LEN - 1) / 2 + 1) as f64);
    }

    #[test]
    fn pathological_nesting_is_refused_not_a_stack_overflow() {
        let parens = format!("{}1{}", "(".repeat(2000), ")".repeat(2000));
        assert_eq!(err(&parens).code(), "too_deep");
        let signs = format!("{}1", "-".repeat(4000));
        assert_eq!(err(&signs).code(), "too_deep");
        let calls = format!("{}1{}", "abs(".repeat(500), ")".repeat(500));
        assert_eq!(err(&calls).code(), "too_deep");
        let powers = format!("1{}", "^1".repeat(2000));
        assert_eq!(err(&powers).code(), "too_deep");
    }

    #[test]
    fn nesting_within_the_limit_evaluates() {
        let parens = format!("{}1{}", "(".repeat(30), ")".repeat(30));
        assert_eq!(eval(&parens), 1.0);
    }
}
