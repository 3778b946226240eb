//! Encode then decode gives back the same value, for every field kind.

use taskgraph::message::{Frame, Message};
use taskgraph_tests::{Color, Everything, Inner, Shape, Tensor};

#[test]
fn sample_round_trips() {
    let v = Everything::sample();
    let bytes = v.encode();
    assert_eq!(Everything::decode(&bytes).unwrap(), v);
}

#[test]
fn default_round_trips() {
    let v = Everything::default();
    assert_eq!(Everything::decode(&v.encode()).unwrap(), v);
}

#[test]
fn every_shape_round_trips() {
    for s in [
        Shape::Empty,
        Shape::Circle(-0.0),
        Shape::Rect { w: 1.0, h: 2.0 },
        Shape::Named("x".into()),
        Shape::Nested(Inner { id: 1, label: "l".into() }),
        Shape::Pair(u16::MAX, Color::Blue),
    ] {
        assert_eq!(Shape::decode(&s.encode()).unwrap(), s);
    }
}

#[test]
fn view_reads_without_copying() {
    let t = Tensor { step: 3, values: (0..1000).map(|i| i as f32).collect() };
    let bytes = t.encode();
    let frame = Frame::<Tensor>::new(&bytes).unwrap();
    let view = frame.view().unwrap();
    assert_eq!(view.step(), 3);
    let values = view.values().unwrap();
    let slice = values.as_slice().expect("aligned");
    assert_eq!(slice, &t.values[..]);
    // The slice points into `bytes`: no copy was made.
    let range = bytes.as_ptr_range();
    assert!(range.contains(&(slice.as_ptr() as *const u8)));
    assert_eq!(view.decode().unwrap(), t);
}

#[test]
fn view_of_everything() {
    let v = Everything::sample();
    let bytes = v.encode();
    let frame = Frame::<Everything>::new(&bytes).unwrap();
    let view = frame.view().unwrap();
    assert_eq!(view.text().unwrap(), "héllo, wörld");
    assert_eq!(view.data().unwrap().to_vec(), v.data);
    assert_eq!(view.inner().unwrap().label().unwrap(), "seven");
    let inners: Vec<u32> = view.inners().unwrap().iter().map(|i| i.id()).collect();
    assert_eq!(inners, vec![1, 2]);
    assert_eq!(view.color().unwrap(), Color::Blue);
    assert_eq!(view.maybe_count().unwrap(), Some(0));
    assert_eq!(view.maybe_color().unwrap(), Some(Color::Red));
    assert_eq!(view.with_default(), 0);
    assert_eq!(view.scale(), 0.0);
    assert!(view.maybe_inner().unwrap().is_some());
    let names: Vec<&str> = view.names().unwrap().iter().map(|s| s.unwrap()).collect();
    assert_eq!(names, vec!["a", "", "ccc"]);
    let row: Vec<f64> = view.matrix().unwrap().get(0).unwrap().unwrap().to_vec();
    assert_eq!(row, vec![1.0, 2.0]);
    assert_eq!(view.shape().unwrap().decode().unwrap(), v.shape);
    let colors: Vec<Color> = view.colors().unwrap().iter().map(|c| c.unwrap()).collect();
    assert_eq!(colors, v.colors);
    // Debug works on views.
    assert!(format!("{view:?}").contains("seven"));
}

#[test]
fn defaults_apply_to_missing_fields() {
    // An empty struct (all zero bytes) reads as the declared defaults.
    let bytes = Inner::default().encode();
    let e = Everything::decode(&bytes).unwrap();
    assert_eq!(e.with_default, 42);
    assert_eq!(e.scale, -1.5);
    assert!(e.on);
    assert_eq!(e.maybe_count, None);
    assert_eq!(e.maybe_text, None);
}
