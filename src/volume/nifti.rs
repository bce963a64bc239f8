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

/// Write `v` as a NIfTI-1 file (float32), gzip-compressed when `path` ends in `.gz`.
pub fn write(v: &Volume, path: &Path, description: &str) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    if path.extension().is_some_and(|e| e == "gz") {
        // Buffered in front of the encoder: it costs a pass over its whole output buffer
        // per write, and the voxels are written four bytes at a time.
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut buffered = std::io::BufWriter::with_capacity(1 << 18, gz);
        write_to(v, &mut buffered, description)?;
        buffered
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .finish()?
            .flush()
    } else {
        let mut f = file;
        write_to(v, &mut f, description)?;
        f.flush()
    }
}

fn write_to(v: &Volume, f: &mut impl Write, description: &str) -> std::io::Result<()> {
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
    f.write_all(&h)?;
    f.write_all(&[0u8; 4])?; // no extensions
    for x in &v.data {
        f.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

/// Why a NIfTI file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    /// The file could not be read.
    #[error("{path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a NIfTI-1 image this reader supports.
    #[error("{path}: not a readable NIfTI-1 image: {message}")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
}

/// A NIfTI-1 image as read: voxel values (x fastest) and the voxel → patient LPS affine.
#[derive(Debug, Clone)]
pub struct NiftiImage {
    /// Voxels along x, y, z.
    pub dims: [usize; 3],
    /// Values after the header's scaling, x fastest.
    pub data: Vec<f32>,
    /// Voxel (i, j, k) → patient LPS mm (rows; NIfTI's RAS converted).
    pub affine: [[f64; 4]; 4],
}

impl NiftiImage {
    /// Patient LPS mm of voxel (i, j, k).
    pub fn voxel_to_patient(&self, v: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3])
    }
}

/// Largest image this reader accepts, in voxels (a label map of a hip MRI is far smaller).
const MAX_VOXELS: usize = 256 * 1024 * 1024;

/// Read a NIfTI-1 image (`.nii`, or gzip-compressed `.nii.gz` as ITK-SNAP saves label
/// maps): 3-D (or 4-D with one volume), integer or float voxels, little or big endian; the
/// affine from the sform when set, else the qform, else the voxel sizes.
pub fn read(path: &Path) -> Result<NiftiImage, NiftiError> {
    use std::io::Read;
    let bad = |message: String| NiftiError::Format {
        path: path.to_owned(),
        message,
    };
    let raw = std::fs::read(path).map_err(|source| NiftiError::Io {
        path: path.to_owned(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take((MAX_VOXELS * 8 + 352) as u64)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("gzip: {e}")))?;
        out
    } else {
        raw
    };
    let h = Header::new(&bytes).map_err(bad)?;
    let ndim = h.i16_at(40);
    if !(1..=7).contains(&ndim) {
        return Err(bad(format!("dim[0] = {ndim}")));
    }
    let dim = |i: usize| {
        if i as i16 <= ndim {
            h.i16_at(40 + 2 * i).max(1) as usize
        } else {
            1
        }
    };
    let dims = [dim(1), dim(2), dim(3)];
    if (4..=7).any(|i| dim(i) != 1) {
        return Err(bad("more than one volume".into()));
    }
    let n = dims[0] * dims[1] * dims[2];
    if n > MAX_VOXELS {
        return Err(bad(format!("{n} voxels is more than this reader accepts")));
    }
    let datatype = h.i16_at(70);
    let (size, read_one) = voxel_reader(datatype)
        .ok_or_else(|| bad(format!("datatype {datatype} is not supported")))?;
    let offset = h.f32_at(108).max(348.0) as usize;
    if bytes.len() < offset + n * size {
        return Err(bad(format!(
            "{} bytes, the header promises {}",
            bytes.len(),
            offset + n * size
        )));
    }
    let (slope, inter) = (h.f32_at(112) as f64, h.f32_at(116) as f64);
    let scale = |v: f64| {
        if slope != 0.0 && slope.is_finite() {
            v * slope + inter
        } else {
            v
        }
    };
    let data = bytes[offset..offset + n * size]
        .chunks_exact(size)
        .map(|b| scale(read_one(b, h.little)) as f32)
        .collect();
    // NIfTI's world is RAS; ours is LPS.
    let ras = h.ras_affine();
    let affine = [
        [-ras[0][0], -ras[0][1], -ras[0][2], -ras[0][3]],
        [-ras[1][0], -ras[1][1], -ras[1][2], -ras[1][3]],
        [ras[2][0], ras[2][1], ras[2][2], ras[2][3]],
        [0.0, 0.0, 0.0, 1.0],
    ];
    Ok(NiftiImage { dims, data, affine })
}

/// A NIfTI-1 header, in either byte order.
struct Header<'a> {
    bytes: &'a [u8],
    little: bool,
}

impl<'a> Header<'a> {
    fn new(bytes: &'a [u8]) -> Result<Header<'a>, String> {
        if bytes.len() < 348 {
            return Err(format!("{} bytes, shorter than a header", bytes.len()));
        }
        let first: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
        let little = i32::from_le_bytes(first) == 348;
        if !little && i32::from_be_bytes(first) != 348 {
            return Err("sizeof_hdr is not 348".into());
        }
        Ok(Header { bytes, little })
    }

    fn i16_at(&self, o: usize) -> i16 {
        let b: [u8; 2] = self.bytes[o..o + 2].try_into().expect("2 bytes");
        if self.little {
            i16::from_le_bytes(b)
        } else {
            i16::from_be_bytes(b)
        }
    }

    fn f32_at(&self, o: usize) -> f32 {
        let b: [u8; 4] = self.bytes[o..o + 4].try_into().expect("4 bytes");
        if self.little {
            f32::from_le_bytes(b)
        } else {
            f32::from_be_bytes(b)
        }
    }

    /// Voxel to RAS mm (three rows): the sform when set, else the qform, else the voxel
    /// sizes.
    fn ras_affine(&self) -> [[f64; 4]; 3] {
        let f = |o: usize| self.f32_at(o) as f64;
        let pixdim = [f(80), f(84), f(88)];
        if self.i16_at(254) > 0 {
            [0, 1, 2].map(|r| [0, 1, 2, 3].map(|c| f(280 + 16 * r + 4 * c)))
        } else if self.i16_at(252) > 0 {
            let (b, c, d) = (f(256), f(260), f(264));
            let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
            let qfac = if f(76) < 0.0 { -1.0 } else { 1.0 };
            let rot = [
                [
                    a * a + b * b - c * c - d * d,
                    2.0 * (b * c - a * d),
                    2.0 * (b * d + a * c),
                ],
                [
                    2.0 * (b * c + a * d),
                    a * a + c * c - b * b - d * d,
                    2.0 * (c * d - a * b),
                ],
                [
                    2.0 * (b * d - a * c),
                    2.0 * (c * d + a * b),
                    a * a + d * d - c * c - b * b,
                ],
            ];
            let s = [pixdim[0], pixdim[1], pixdim[2] * qfac];
            let off = [f(268), f(272), f(276)];
            [0, 1, 2].map(|r| [rot[r][0] * s[0], rot[r][1] * s[1], rot[r][2] * s[2], off[r]])
        } else {
            [
                [pixdim[0], 0.0, 0.0, 0.0],
                [0.0, pixdim[1], 0.0, 0.0],
                [0.0, 0.0, pixdim[2], 0.0],
            ]
        }
    }
}

/// Reads one voxel: (its bytes, little-endian) → value.
type VoxelReader = fn(&[u8], bool) -> f64;

/// How a voxel of NIfTI `datatype` is read: its size in bytes and a reader (bytes,
/// little-endian) → value; `None` for a type this reader does not take.
fn voxel_reader(datatype: i16) -> Option<(usize, VoxelReader)> {
    // One reader per number type: its size, and its bytes in either order.
    macro_rules! reader {
        ($t:ty) => {
            (std::mem::size_of::<$t>(), |b: &[u8], le: bool| {
                let a = b[..std::mem::size_of::<$t>()]
                    .try_into()
                    .expect("sized chunk");
                (if le {
                    <$t>::from_le_bytes(a)
                } else {
                    <$t>::from_be_bytes(a)
                }) as f64
            })
        };
    }
    Some(match datatype {
        2 => reader!(u8),
        256 => reader!(i8),
        4 => reader!(i16),
        512 => reader!(u16),
        8 => reader!(i32),
        768 => reader!(u32),
        16 => reader!(f32),
        64 => reader!(f64),
        _ => return None,
    })
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

    #[test]
    fn every_voxel_type_reads_as_its_values() {
        let mut v = crate::volume::assemble::coronal_test_volume([2, 2, 2], 1.0);
        for (i, x) in v.data.iter_mut().enumerate() {
            *x = i as f32 * 3.0;
        }
        let mut float32 = Vec::new();
        write_to(&v, &mut float32, "test").unwrap();
        let header = &float32[..352];
        let dir = tempfile::tempdir().unwrap();
        // (datatype, little-endian bytes of one value)
        let encoders: [(i16, fn(f32) -> Vec<u8>); 8] = [
            (2, |x| vec![x as u8]),
            (256, |x| vec![x as i8 as u8]),
            (4, |x| (x as i16).to_le_bytes().to_vec()),
            (512, |x| (x as u16).to_le_bytes().to_vec()),
            (8, |x| (x as i32).to_le_bytes().to_vec()),
            (768, |x| (x as u32).to_le_bytes().to_vec()),
            (16, |x| x.to_le_bytes().to_vec()),
            (64, |x| (x as f64).to_le_bytes().to_vec()),
        ];
        for (datatype, encode) in encoders {
            let mut bytes = header.to_vec();
            bytes[70..72].copy_from_slice(&datatype.to_le_bytes());
            bytes.extend(v.data.iter().flat_map(|x| encode(*x)));
            let p = dir.path().join(format!("t{datatype}.nii"));
            std::fs::write(&p, &bytes).unwrap();
            assert_eq!(read(&p).unwrap().data, v.data, "datatype {datatype}");
        }
        let mut bytes = header.to_vec();
        bytes[70..72].copy_from_slice(&32i16.to_le_bytes());
        let p = dir.path().join("complex.nii");
        std::fs::write(&p, &bytes).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("datatype 32"));
    }

    #[test]
    fn what_is_written_reads_back_with_its_affine_plain_and_gzipped() {
        use std::io::Write;
        let mut v = crate::volume::assemble::coronal_test_volume([3, 4, 5], 1.0);
        for (i, x) in v.data.iter_mut().enumerate() {
            *x = i as f32;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.nii");
        write(&v, &p, "test").unwrap();
        let gz = dir.path().join("v.nii.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&std::fs::read(&p).unwrap()).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        // And gzipped by `write` itself.
        let own = dir.path().join("own.nii.gz");
        write(&v, &own, "test").unwrap();
        assert_eq!(&std::fs::read(&own).unwrap()[..2], &[0x1f, 0x8b]);
        for path in [&p, &gz, &own] {
            let n = read(path).unwrap();
            assert_eq!(n.dims, v.dims);
            assert_eq!(n.data, v.data);
            for r in 0..3 {
                for c in 0..4 {
                    assert!((n.affine[r][c] - v.affine[r][c]).abs() < 1e-4, "{r} {c}");
                }
            }
        }
        std::fs::write(&p, [0u8; 100]).unwrap();
        assert!(matches!(read(&p), Err(NiftiError::Format { .. })));
    }
}
