//! `#[derive(Message)]`: parse a Rust struct or enum into the message
//! model, check it, lay it out with [`crate::layout`], and emit the Rust
//! code and `.capnp` text.

mod emit;
mod model;
mod parse;

pub use emit::{dummy, schema_text};
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
/// by the compiler, as for every derive), beside a [`dummy`] of the
/// derive's impls, so that the errors are the derive's only.
pub fn derive(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<syn::DeriveInput>(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    match analyze(&input) {
        Ok((def, layout)) => emit::emit(&def, layout.as_ref()),
        Err(e) => {
            let errors = e.to_compile_error();
            let dummy = dummy(&input, &parse::crate_path(&input.attrs));
            quote::quote!(#errors #dummy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn errors_of(out: &TokenStream) -> Vec<String> {
        let text = out.to_string();
        text.split("compile_error !").skip(1).map(|s| s.split('"').nth(1).unwrap_or("").to_owned()).collect()
    }

    #[test]
    fn a_failed_derive_emits_its_errors_and_a_dummy_of_its_impls() {
        let out = derive(quote! {
            pub struct Weights {
                #[capnp(ordinal = 0)] pub step: usize,
                #[capnp(ordinal = 1)] pub values: Vec<f32>,
            }
        });
        let errors = errors_of(&out);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("`usize` has no fixed size"), "{errors:?}");
        let text = out.to_string();
        for item in ["Named for Weights", "Struct for Weights", "Message for Weights", "PointerField for Weights", "Element for Weights", "struct WeightsView"] {
            assert!(text.contains(item), "no `{item}` in {text}");
        }
    }

    #[test]
    fn a_failed_fieldless_enum_gets_a_dummy_enum_impl_and_no_gap_error() {
        let out = derive(quote! {
            pub enum Phase { Warmup = 0, Train, Done = 2 }
        });
        let errors = errors_of(&out);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("enumerant `Train` needs a permanent number"), "{errors:?}");
        let text = out.to_string();
        assert!(text.contains("Enum for Phase") && text.contains("Element for Phase"), "{text}");
        assert!(!text.contains("Struct for Phase"), "{text}");
    }

    #[test]
    fn a_real_gap_is_still_reported() {
        let errors = errors_of(&derive(quote! {
            pub struct Gap { #[capnp(ordinal = 0)] pub a: u32, #[capnp(ordinal = 2)] pub b: u32 }
        }));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("ordinal 1 is unused"), "{errors:?}");
    }

    #[test]
    fn a_generic_type_gets_no_dummy() {
        let out = derive(quote! {
            pub struct Generic<T> { #[capnp(ordinal = 0)] pub value: T }
        });
        assert!(!out.to_string().contains("impl"), "{out}");
    }
}

#[cfg(test)]
mod option_ordinals {
    use super::*;
    use quote::quote;

    fn errors(input: TokenStream) -> Vec<String> {
        match analyze(&syn::parse2(input).unwrap()) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_clash_with_an_options_second_ordinal_states_the_rule() {
        let e = errors(quote! {
            pub struct S { #[capnp(ordinal = 0)] pub a: Option<u32>, #[capnp(ordinal = 1)] pub b: u32 }
        });
        assert_eq!(
            e,
            ["ordinal 1 is already used by `a`; `a` is an `Option` of a number, which takes two ordinals: \
              0 (`none`) and 1 (`some`): give this field 2, the next free one"]
        );
        let e = errors(quote! {
            pub struct S { #[capnp(ordinal = 1)] pub b: u32, #[capnp(ordinal = 0)] pub a: Option<u32> }
        });
        assert_eq!(
            e,
            ["ordinal 1 is already used by `b`; `a` is an `Option` of a number, which takes two ordinals: 0 (`none`) and 1 (`some`)"]
        );
    }
}
