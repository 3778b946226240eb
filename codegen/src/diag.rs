//! Collecting diagnostics: every problem in a macro's input is reported
//! at once, each at the user's own tokens, instead of stopping at the
//! first.

use proc_macro2::{Span, TokenStream};
use std::fmt::Display;

/// An accumulator of errors. It must be consumed with
/// [`finish`](Diagnostics::finish); dropping it unchecked is a bug in the
/// macro (errors would be lost), caught in debug builds.
#[derive(Debug, Default)]
pub struct Diagnostics {
    errors: Vec<syn::Error>,
    finished: bool,
}

impl Diagnostics {
    /// A new, empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error at `span`.
    pub fn error(&mut self, span: Span, message: impl Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    /// Records an error at the tokens of `tokens`.
    pub fn error_at(&mut self, tokens: impl quote::ToTokens, message: impl Display) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records a parse error.
    pub fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// Whether any error has been recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// All errors as one, or `Ok` if there are none.
    pub fn finish(mut self) -> Result<(), syn::Error> {
        self.finished = true;
        let mut errors = std::mem::take(&mut self.errors).into_iter();
        match errors.next() {
            None => Ok(()),
            Some(mut first) => {
                for e in errors {
                    first.combine(e);
                }
                Err(first)
            }
        }
    }

    /// The errors as `compile_error!` invocations.
    pub fn into_compile_errors(self) -> TokenStream {
        match self.finish() {
            Ok(()) => TokenStream::new(),
            Err(e) => e.to_compile_error(),
        }
    }
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        debug_assert!(
            self.finished || self.errors.is_empty() || std::thread::panicking(),
            "Diagnostics dropped with unreported errors"
        );
    }
}
