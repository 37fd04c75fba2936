//! A problem found in a manifest: where it is, what is wrong, and what to do.

use std::fmt;

use serde::Serialize;

/// How bad a problem is.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; does not make the manifest invalid.
    Warning,
    /// The manifest is rejected.
    Error,
}

/// One problem, printed as `file: path: message (hint)`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file it came from, when known (`-` for standard input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based index of the YAML document within the file, when the file holds several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// The object, e.g. `Plugin/calculator`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Field path, e.g. `spec.resources.memory` (empty for the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// An error at `path`.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            document: None,
            object: None,
            path: path.into(),
            message: message.into(),
            hint: None,
            severity: Severity::Error,
        }
    }

    /// A warning at `path`.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(path, message)
        }
    }

    /// Adds what to do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the file (and the document index within it).
    pub fn in_file(mut self, file: &str, document: Option<usize>) -> Self {
        self.file = Some(file.to_string());
        self.document = document;
        self
    }

    /// Sets the object the problem belongs to.
    pub fn for_object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(doc) = self.document {
                write!(f, "#{doc}")?;
            }
            f.write_str(": ")?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_file_path_message_and_hint() {
        let p = Problem::error("spec.resources.memory", "\"64 MB\" is not a quantity")
            .hint("try \"64Mi\"")
            .in_file("examples/calc.yaml", None);
        assert_eq!(
            p.to_string(),
            "examples/calc.yaml: spec.resources.memory: \"64 MB\" is not a quantity (try \"64Mi\")"
        );
        let w = Problem::warning("spec.dependsOn[0]", "not found").in_file("a.yaml", Some(2));
        assert_eq!(
            w.to_string(),
            "a.yaml#2: warning: spec.dependsOn[0]: not found"
        );
    }
}
