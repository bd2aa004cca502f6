//! Voxel values: decoding stored bytes of any supported datatype, and the sealed set of types
//! the writer stores.

use super::header::{Datatype, Endian};

/// Decodes `raw` (exactly `n * datatype.size()` bytes) and maps every stored value, widened to
/// f64 (exact for every supported datatype), through `convert(voxel_index, value)`. The first
/// error stops decoding.
pub fn decode<T>(
    raw: &[u8],
    datatype: Datatype,
    endian: Endian,
    mut convert: impl FnMut(usize, f64) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(raw.len() / datatype.size());
    macro_rules! decode_as {
        ($t:ty) => {{
            const N: usize = size_of::<$t>();
            for (i, chunk) in raw.chunks_exact(N).enumerate() {
                let bytes: [u8; N] = std::array::from_fn(|b| chunk[b]);
                let v = match endian {
                    Endian::Little => <$t>::from_le_bytes(bytes),
                    Endian::Big => <$t>::from_be_bytes(bytes),
                };
                out.push(convert(i, f64::from(v))?);
            }
        }};
    }
    match datatype {
        Datatype::U8 => decode_as!(u8),
        Datatype::I8 => decode_as!(i8),
        Datatype::I16 => decode_as!(i16),
        Datatype::U16 => decode_as!(u16),
        Datatype::I32 => decode_as!(i32),
        Datatype::U32 => decode_as!(u32),
        Datatype::F32 => decode_as!(f32),
        Datatype::F64 => decode_as!(f64),
    }
    Ok(out)
}

pub(super) mod sealed {
    use super::Datatype;

    /// A voxel type the writer can store (and, for integers, the label reader can produce).
    /// Sealed: the set is fixed by the datatypes this module supports.
    pub trait Sample: Copy + Send + Sync + 'static {
        /// Datatype stored on disk.
        const DATATYPE: Datatype;
        /// Smallest representable value, as f64.
        const MIN: f64;
        /// Largest representable value, as f64.
        const MAX: f64;
        /// Appends the little-endian bytes of `self`.
        fn put_le(self, out: &mut Vec<u8>);
        /// Converts an integral f64 already checked to lie in `MIN..=MAX`.
        fn from_integral(v: f64) -> Self;
    }

    macro_rules! sample {
        ($t:ty, $dt:expr) => {
            impl Sample for $t {
                const DATATYPE: Datatype = $dt;
                const MIN: f64 = <$t>::MIN as f64;
                const MAX: f64 = <$t>::MAX as f64;
                fn put_le(self, out: &mut Vec<u8>) {
                    out.extend_from_slice(&self.to_le_bytes());
                }
                fn from_integral(v: f64) -> Self {
                    v as $t
                }
            }
        };
    }
    sample!(u8, Datatype::U8);
    sample!(u16, Datatype::U16);
    sample!(i16, Datatype::I16);
    sample!(f32, Datatype::F32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_byte_orders() {
        let le = [0x01, 0x02, 0xff, 0xff];
        let v = decode(&le, Datatype::I16, Endian::Little, |_, v| Ok(v)).unwrap();
        assert_eq!(v, [513.0, -1.0]);
        let v = decode(&le, Datatype::I16, Endian::Big, |_, v| Ok(v)).unwrap();
        assert_eq!(v, [258.0, -1.0]);
        let v = decode(&le, Datatype::U32, Endian::Big, |_, v| Ok(v)).unwrap();
        assert_eq!(v, [f64::from(0x0102_ffff_u32)]);
    }

    #[test]
    fn conversion_errors_stop_decoding() {
        let r = decode(&[1, 2, 3], Datatype::U8, Endian::Little, |i, v| {
            if i == 1 {
                Err(format!("bad {v}"))
            } else {
                Ok(v)
            }
        });
        assert_eq!(r, Err("bad 2".to_owned()));
    }
}
