//! The spine localisation on phantoms of every region and domain: the located region must hold
//! every vertebra voxel of the ground truth (a missed vertebra would silently vanish from the
//! results), and be smaller than the volume.

use vertebra_core::anatomy::Vertebra;
use vertebra_core::inference::{LocateConfig, locate_spine, prepare_ct, prepare_labels};
use vertebra_core::phantom::{self, LesionPlan, PhantomSpec, domain};

#[test]
fn the_located_region_holds_every_vertebra_of_the_phantom() {
    let cases = [
        (1, Vertebra::C1, Vertebra::T2, "ct-standard", 256),
        (2, Vertebra::T1, Vertebra::T12, "ct-bone-sharp", 256),
        (3, Vertebra::T10, Vertebra::L5, "ct-lowdose-thick", 320),
        (4, Vertebra::T6, Vertebra::L5, "ct-metal-hardware", 320),
        (
            5,
            Vertebra::T11,
            Vertebra::L5,
            "ct-legacy-miscalibrated",
            256,
        ),
    ];
    for (seed, first, last, dom, in_plane) in cases {
        let mut spec = PhantomSpec::new(seed, first, last, domain::preset(dom).unwrap());
        spec.in_plane = in_plane;
        spec.lesions = LesionPlan::Random { rate: 1.0 };
        let p = phantom::generate(&spec).unwrap();
        let image = prepare_ct(&p.ct, 2.0).unwrap();
        let labels = prepare_labels(&p.labels, 2.0).unwrap();
        let loc = locate_spine(&image, &LocateConfig::default()).unwrap();
        let r = loc
            .region
            .unwrap_or_else(|| panic!("seed {seed} {dom}: no region: {}", loc.note));
        let [nx, ny, _] = labels.dims();
        let mut outside = 0usize;
        for (i, &l) in labels.data().iter().enumerate() {
            if l == 0 {
                continue;
            }
            let c = [i % nx, (i / nx) % ny, i / (nx * ny)];
            if (0..3).any(|a| c[a] < r.lo[a] || c[a] >= r.hi[a]) {
                outside += 1;
            }
        }
        assert_eq!(
            outside,
            0,
            "seed {seed} {dom} {}–{}: {outside} vertebra voxels outside {r:?} ({})",
            first.name(),
            last.name(),
            loc.note
        );
        // A 60 mm margin around the column is ~170 mm in plane: a real restriction on a
        // clinical field of view (≥ 224 mm here), most of a small one.
        let fov_mm = p.ct.geometry().spacing[0] * in_plane as f64;
        let limit = if fov_mm >= 220.0 { 0.7 } else { 1.0 };
        assert!(
            loc.fraction_of_volume <= limit,
            "seed {seed} {dom}: region is {:.0} % of the volume ({})",
            100.0 * loc.fraction_of_volume,
            loc.note
        );
    }
}
