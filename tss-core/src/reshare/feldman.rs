//! Feldman VSS arithmetic on secp256k1: evaluation points, Lagrange coefficients at 0 and
//! evaluation of a commitment vector.

use cggmp21::generic_ec::{Point, Scalar};

use crate::ecdsa::Curve;

/// Evaluation point of the party with index `i` (CGGMP21 uses `i + 1`).
pub(super) fn point_of(i: u16) -> Scalar<Curve> {
    Scalar::from(u64::from(i) + 1)
}

pub(super) fn lagrange_at_zero(j: usize, xs: &[Scalar<Curve>]) -> Option<Scalar<Curve>> {
    let mut num = Scalar::<Curve>::one();
    let mut den = Scalar::<Curve>::one();
    for (m, x_m) in xs.iter().enumerate() {
        if m != j {
            num *= x_m;
            den *= *x_m - xs[j];
        }
    }
    Some(num * den.invert()?)
}

pub(super) fn eval_commitments(commitments: &[Point<Curve>], x: &Scalar<Curve>) -> Point<Curve> {
    let mut acc = Point::<Curve>::zero();
    for c in commitments.iter().rev() {
        acc = acc * x + c;
    }
    acc
}
