//! `#[derive(Message)]`: parse a Rust struct or enum into the message
//! model, check it, lay it out with [`crate::layout`], and emit the Rust
//! code and `.capnp` text.

mod emit;
mod model;
mod parse;

pub use emit::schema_text;
pub use model::*;
// Where they were public before they moved to `names`.
pub use crate::names::{camel_case, lower_first};

use proc_macro2::TokenStream;

use crate::diag::Diagnostics;
use crate::layout::{self, LayoutError};

/// Parses and checks a derive input into the model, with the layout of
/// its struct (none for a fieldless enum).
pub fn analyze(input: &syn::DeriveInput) -> Result<(MessageDef, Option<layout::Layout>), syn::Error> {
    let mut diag = Diagnostics::new();
    let def = parse::parse(input, &mut diag);
    let result = def.and_then(|def| {
        let layout = match def.layout_shape().map(|shape| layout::compute(&shape)) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                let msg = match e {
                    LayoutError::TooLarge => {
                        "this message is too large for Cap'n Proto (more than 65535 words of data or pointers)"
                            .to_owned()
                    }
                    other => format!("cannot lay this message out: {other:?}"),
                };
                diag.error_at(&input.ident, msg);
                return None;
            }
        };
        Some((def, layout))
    });
    diag.finish()?;
    Ok(result.expect("no errors means a result"))
}

/// The whole derive: tokens in, tokens out. Errors become
/// `compile_error!` at the user's tokens (the user's item itself is kept
/// by the compiler, as for every derive).
pub fn derive(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<syn::DeriveInput>(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    match analyze(&input) {
        Ok((def, layout)) => emit::emit(&def, layout.as_ref()),
        Err(e) => e.to_compile_error(),
    }
}
