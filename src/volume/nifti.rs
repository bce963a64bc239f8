//! NIfTI-1 export (single `.nii` file, float32) with the volume's affine, so a volume or a
//! heatmap opens in ITK-SNAP or 3D Slicer in the right place.
//!
//! NIfTI's world space is RAS (+x right... to the patient's left is -x), DICOM's is LPS:
//! the affine's first two rows change sign. Both the sform (code 1, scanner anatomical) and
//! the qform (the same rotation as a quaternion, plus spacing and offset) are written,
//! because readers differ in which one they trust.

use std::io::Write;
use std::path::Path;

use super::Volume;

/// The volume's voxel → RAS affine (rows), as NIfTI stores it.
pub fn ras_affine(v: &Volume) -> [[f64; 4]; 3] {
    let a = v.affine;
    [
        [-a[0][0], -a[0][1], -a[0][2], -a[0][3]],
        [-a[1][0], -a[1][1], -a[1][2], -a[1][3]],
        [a[2][0], a[2][1], a[2][2], a[2][3]],
    ]
}

/// Quaternion (b, c, d) and qfac of the rotation part of `m` (columns scaled to unit
/// length), following the NIfTI reference implementation (nifti_mat44_to_quatern).
fn quatern(m: [[f64; 4]; 3], spacing: [f64; 3]) -> ([f64; 3], f64) {
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = m[i][j] / spacing[j];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    // (a, b, c, d) with a >= 0; only (b, c, d) are stored.
    let q = if trace > 0.5 {
        let a = 0.5 * trace.sqrt();
        [
            a,
            0.25 * (r[2][1] - r[1][2]) / a,
            0.25 * (r[0][2] - r[2][0]) / a,
            0.25 * (r[1][0] - r[0][1]) / a,
        ]
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        let q = if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            [
                0.25 * (r[2][1] - r[1][2]) / b,
                b,
                0.25 * (r[0][1] + r[1][0]) / b,
                0.25 * (r[0][2] + r[2][0]) / b,
            ]
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            [
                0.25 * (r[0][2] - r[2][0]) / c,
                0.25 * (r[0][1] + r[1][0]) / c,
                c,
                0.25 * (r[1][2] + r[2][1]) / c,
            ]
        } else {
            let d = 0.5 * zd.sqrt();
            [
                0.25 * (r[1][0] - r[0][1]) / d,
                0.25 * (r[0][2] + r[2][0]) / d,
                0.25 * (r[1][2] + r[2][1]) / d,
                d,
            ]
        };
        if q[0] < 0.0 { q.map(|x| -x) } else { q }
    };
    ([q[1], q[2], q[3]], qfac)
}

/// Write `v` as a NIfTI-1 file (float32).
pub fn write(v: &Volume, path: &Path, description: &str) -> std::io::Result<()> {
    let mut h = vec![0u8; 348];
    let put_i16 =
        |h: &mut Vec<u8>, at: usize, x: i16| h[at..at + 2].copy_from_slice(&x.to_le_bytes());
    let put_i32 =
        |h: &mut Vec<u8>, at: usize, x: i32| h[at..at + 4].copy_from_slice(&x.to_le_bytes());
    let put_f32 =
        |h: &mut Vec<u8>, at: usize, x: f32| h[at..at + 4].copy_from_slice(&x.to_le_bytes());
    put_i32(&mut h, 0, 348);
    h[38] = b'r'; // regular
    let [nx, ny, nz] = v.dims;
    for (i, x) in [3i16, nx as i16, ny as i16, nz as i16, 1, 1, 1, 1]
        .iter()
        .enumerate()
    {
        put_i16(&mut h, 40 + 2 * i, *x);
    }
    put_i16(&mut h, 70, 16); // datatype: float32
    put_i16(&mut h, 72, 32); // bitpix
    let ras = ras_affine(v);
    let spacing = v.spacing();
    let (q, qfac) = quatern(ras, spacing);
    for (i, x) in [qfac, spacing[0], spacing[1], spacing[2], 1.0, 1.0, 1.0, 1.0]
        .iter()
        .enumerate()
    {
        put_f32(&mut h, 76 + 4 * i, *x as f32);
    }
    put_f32(&mut h, 108, 352.0); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2 | 8; // xyzt_units: mm, s
    let desc = description.as_bytes();
    h[148..148 + desc.len().min(79)].copy_from_slice(&desc[..desc.len().min(79)]);
    put_i16(&mut h, 252, 1); // qform_code: scanner anatomical
    put_i16(&mut h, 254, 1); // sform_code: scanner anatomical
    for (i, x) in [q[0], q[1], q[2], ras[0][3], ras[1][3], ras[2][3]]
        .iter()
        .enumerate()
    {
        put_f32(&mut h, 256 + 4 * i, *x as f32);
    }
    for (r, row) in ras.iter().enumerate() {
        for (c, x) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, *x as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(&h)?;
    f.write_all(&[0u8; 4])?; // no extensions
    for x in &v.data {
        f.write_all(&x.to_le_bytes())?;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_carries_the_ras_affine() {
        let v = crate::volume::assemble::coronal_test_volume([2, 3, 4], 1.0);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.nii");
        write(&v, &p, "test").unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(b.len(), 352 + 24 * 4);
        let f = |at: usize| f32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        // srow_x = -(LPS row x), srow_z = LPS row z.
        assert_eq!([f(280), f(284), f(288), f(292)], [-0.8, 0.0, 0.0, 100.0]);
        assert_eq!([f(312), f(316), f(320), f(324)], [0.0, -0.8, 0.0, 50.0]);
        assert_eq!(&b[344..348], b"n+1\0");
        assert_eq!([f(80), f(84), f(88)], [0.8, 0.8, 3.5]);
    }
}
