//! Naming helpers shared by the macros: what counts as a snake_case or
//! UpperCamelCase name, Rust's keywords, the conversions between the
//! cases (Rust's and Cap'n Proto's), and how a list of names reads in a
//! message.

use proc_macro2::Ident;

/// Whether `name` is a snake_case identifier: lowercase ASCII letters and
/// digits in words joined by single underscores, starting with a letter.
pub fn is_snake_case(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.split('_').all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
}

/// Whether `name` is UpperCamelCase: an ASCII capital, then ASCII letters
/// and digits.
pub fn is_camel_case(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase()) && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// `name` in snake_case, if that makes an identifier (`childNodes` →
/// `child_nodes`).
pub fn to_snake_case(name: &str) -> Option<String> {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in name.trim_start_matches("r#").chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else {
            out.push(c);
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    let words: Vec<&str> = out.split('_').filter(|w| !w.is_empty()).collect();
    let out = words.join("_");
    (is_snake_case(&out) && !is_keyword(&out)).then_some(out)
}

/// `name` in snake_case ([`to_snake_case`]), or else just in lowercase.
pub fn snake_or_lower(name: &str) -> String {
    to_snake_case(name).unwrap_or_else(|| name.to_lowercase())
}

/// Rust's strict and reserved keywords: names a method cannot have.
pub fn is_keyword(name: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
        "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self",
        "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while", "abstract",
        "become", "box", "do", "final", "gen", "macro", "override", "priv", "try", "typeof", "unsized", "virtual",
        "yield",
    ];
    KEYWORDS.contains(&name)
}

/// `name` in capitals, at its span: the name of an associated const
/// (`PARENT` for `parent`).
pub fn upper(name: &Ident) -> Ident {
    Ident::new(&name.to_string().to_uppercase(), name.span())
}

/// A role's field in the graph's tasks struct: the role's name in
/// snake_case (`Worker` → `worker`), raw if it is a keyword.
pub fn role_field(role: &Ident) -> Ident {
    let snake = snake_or_lower(&role.to_string());
    if is_keyword(&snake) {
        Ident::new_raw(&snake, role.span())
    } else {
        Ident::new(&snake, role.span())
    }
}

/// `snake_case` to Cap'n Proto's `camelCase` (no underscores allowed).
pub fn camel_case(name: &str) -> String {
    let name = name.strip_prefix("r#").unwrap_or(name);
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `snake_case` to Rust's `UpperCamelCase`, for a type named after a
/// snake_case name (`peer_param` → `PeerParam`).
pub fn upper_camel_case(name: &str) -> String {
    let camel = camel_case(name);
    let mut chars = camel.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => camel,
    }
}

/// A variant name (`CamelCase`) as a field or enumerant name (`camelCase`).
pub fn lower_first(name: &str) -> String {
    let camel = camel_case(name);
    let mut chars = camel.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => camel,
    }
}

/// Names in backticks, as prose: "none", "`a`", "`a` and `b`", "`a`, `b`
/// and `c`".
pub fn list(names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    match names.len() {
        0 => "none".into(),
        1 => names[0].clone(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(camel_case("learning_rate"), "learningRate");
        assert_eq!(camel_case("w"), "w");
        assert_eq!(camel_case("_private_x"), "privateX");
        assert_eq!(camel_case("r#type"), "type");
        assert_eq!(camel_case("layer_2_bias"), "layer2Bias");
        assert_eq!(lower_first("BigCircle"), "bigCircle");
        assert_eq!(upper_camel_case("peer_param"), "PeerParam");
        assert_eq!(upper_camel_case("layer_2_bias"), "Layer2Bias");
        assert_eq!(upper_camel_case("token"), "Token");
    }

    #[test]
    fn snake_case() {
        assert!(is_snake_case("level_2") && is_snake_case("a2b"));
        assert!(!is_snake_case("_a") && !is_snake_case("a_") && !is_snake_case("2a") && !is_snake_case(""));
    }
}
