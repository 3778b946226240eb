//! The expansion dump of every macro: with `TASKGRAPH_DEBUG_MACRO` set to
//! the name of a graph or of a struct, the code the macro generates for it
//! is also printed to stderr.

use proc_macro2::TokenStream;

/// The environment variable that dumps an expansion: set it to a graph's
/// or a struct's name to print the code the macro generates for it to
/// stderr.
pub const DEBUG_ENV: &str = "TASKGRAPH_DEBUG_MACRO";

/// How a dump shows the expansion.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Format {
    /// Formatted with [`crate::pretty`].
    Pretty,
    /// As the tokens print (`TokenStream`'s `Display`), on one line.
    Tokens,
}

/// Prints `out`, the expansion by `macro_name` (`taskgraph!`,
/// `#[topology]`, ...) of the item called `name`, to stderr when
/// [`DEBUG_ENV`] is set to that name.
pub(crate) fn dump(macro_name: &str, name: Option<&str>, out: &TokenStream, format: Format) {
    if let (Ok(want), Some(name)) = (std::env::var(DEBUG_ENV), name) {
        if want == name {
            let text = match format {
                Format::Pretty => crate::pretty(out),
                Format::Tokens => out.to_string(),
            };
            eprintln!("{macro_name} expansion of `{name}` ({DEBUG_ENV}):\n{text}");
        }
    }
}
