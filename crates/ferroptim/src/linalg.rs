//! Dense linear algebra on row-major slices, through faer: the matrix
//! products, symmetric eigendecompositions and QR factorizations of the
//! optimizers that work in a matrix's eigenbasis (SOAP).
//!
//! Every matrix here is a row-major slice with its dimensions beside it.
//! Products allocate nothing (faer keeps its packing buffers per thread);
//! the factorizations allocate their result, as they run once every
//! `precondition_frequency` steps.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

/// A row-major `rows × cols` matrix in `data`, used as it is or transposed.
#[derive(Clone, Copy, Debug)]
pub struct View<'a, T> {
    /// The elements, row after row.
    pub data: &'a [T],
    /// Rows as stored.
    pub rows: usize,
    /// Columns as stored.
    pub cols: usize,
    /// Whether the product uses the transpose.
    pub transposed: bool,
}

impl<'a, T> View<'a, T> {
    /// `data` as a `rows × cols` matrix.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            transposed: false,
        }
    }

    /// Its transpose.
    pub fn t(self) -> Self {
        View {
            transposed: !self.transposed,
            ..self
        }
    }

    fn faer(&self) -> MatRef<'a, T> {
        let m =
            MatRef::from_row_major_slice(&self.data[..self.rows * self.cols], self.rows, self.cols);
        if self.transposed {
            m.transpose()
        } else {
            m
        }
    }
}

/// Linear algebra on `f32` and `f64`, the element types of [`Element`](crate::Element).
pub trait Linalg: Copy + Sized + 'static {
    /// `dst = a·b` (or `dst += a·b` with `accumulate`), `dst` row-major with
    /// `a`'s rows and `b`'s columns. The caller has checked the shapes.
    fn matmul(dst: &mut [Self], accumulate: bool, a: View<'_, Self>, b: View<'_, Self>);

    /// The eigenvectors of the symmetric `n × n` matrix `m` (its lower
    /// triangle is read), as the columns of `q` (row-major), ordered from the
    /// largest eigenvalue to the smallest: torch's `linalg.eigh` with its
    /// columns flipped. `false` if the solver did not converge.
    fn eigh_descending(m: &[Self], n: usize, q: &mut [Self]) -> bool;

    /// The orthogonal factor `Q` of the QR factorization of the square
    /// `n × n` matrix `m`, computed in `f32` (as torch's SOAP computes it
    /// whatever the parameter's dtype) and written to `q` (row-major).
    fn qr_q_f32(m: &[Self], n: usize, q: &mut [Self]);
}

macro_rules! linalg_impl {
    ($t:ty) => {
        impl Linalg for $t {
            fn matmul(dst: &mut [Self], accumulate: bool, a: View<'_, Self>, b: View<'_, Self>) {
                let (a, b) = (a.faer(), b.faer());
                let (rows, cols) = (a.nrows(), b.ncols());
                let dst = MatMut::from_row_major_slice_mut(&mut dst[..rows * cols], rows, cols);
                let accum = if accumulate {
                    Accum::Add
                } else {
                    Accum::Replace
                };
                matmul(dst, accum, a, b, 1.0, Par::Seq);
            }

            fn eigh_descending(m: &[Self], n: usize, q: &mut [Self]) -> bool {
                let m = MatRef::from_row_major_slice(&m[..n * n], n, n);
                let Ok(eigen) = m.self_adjoint_eigen(Side::Lower) else {
                    return false;
                };
                // faer's eigenvalues ascend, as LAPACK's.
                let u = eigen.U();
                for i in 0..n {
                    for j in 0..n {
                        q[i * n + j] = u[(i, n - 1 - j)];
                    }
                }
                true
            }

            fn qr_q_f32(m: &[Self], n: usize, q: &mut [Self]) {
                let m32 = Mat::<f32>::from_fn(n, n, |i, j| m[i * n + j] as f32);
                let factor = m32.qr().compute_Q();
                for i in 0..n {
                    for j in 0..n {
                        q[i * n + j] = factor[(i, j)] as $t;
                    }
                }
            }
        }
    };
}

linalg_impl!(f32);
linalg_impl!(f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_use_the_views_as_stored_or_transposed() {
        let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 x 3
        let mut dst = [0.0f64; 4];
        f64::matmul(
            &mut dst,
            false,
            View::new(&a, 2, 3),
            View::new(&a, 2, 3).t(),
        );
        assert_eq!(dst, [14.0, 32.0, 32.0, 77.0]);
        let mut dst = [1.0f64; 9];
        f64::matmul(&mut dst, true, View::new(&a, 2, 3).t(), View::new(&a, 2, 3));
        assert_eq!(dst, [18.0, 23.0, 28.0, 23.0, 30.0, 37.0, 28.0, 37.0, 46.0]);
    }

    #[test]
    fn eigenvectors_come_largest_first_and_qr_is_orthogonal() {
        let m = [2.0f32, 1.0, 1.0, 2.0]; // eigenvalues 3 (along [1, 1]) and 1
        let mut q = [0.0f32; 4];
        assert!(f32::eigh_descending(&m, 2, &mut q));
        assert!((q[0].abs() - 0.5f32.sqrt()).abs() < 1e-6 && (q[0] - q[2]).abs() < 1e-6);
        let p = [3.0f64, 1.0, 4.0, 1.0];
        let mut q = [0.0f64; 4];
        f64::qr_q_f32(&p, 2, &mut q);
        let dot = q[0] * q[1] + q[2] * q[3];
        let norm = q[0] * q[0] + q[2] * q[2];
        assert!(dot.abs() < 1e-6 && (norm - 1.0).abs() < 1e-6, "{q:?}");
        // Q's first column is along the first column of the matrix.
        assert!((q[0] * 4.0 - q[2] * 3.0).abs() < 1e-6);
    }
}
