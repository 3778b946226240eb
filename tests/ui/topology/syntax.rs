use taskgraph::prelude::*;

#[topology]
pub struct Empty;

#[topology()]
pub struct AlsoEmpty;

#[topology(<-> children)]
pub struct NoLeft;

#[topology(parent <->)]
pub struct NoRight;

#[topology(parent -> children)]
pub struct OneWay;

#[topology(a <-> b <-> c)]
pub struct Chain;

#[topology(a, , b)]
pub struct DoubleComma;

#[topology(parent = children)]
pub struct Equals;

fn main() {}
