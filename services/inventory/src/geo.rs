//! Choosing the warehouse for a reservation, as the seed system did: the caller's
//! preferred warehouse when it can serve the whole quantity, else the nearest able one to
//! the delivery point by great-circle distance, else the able one with most available.
//! Pure functions, so the policy is tested without a database.

/// Mean Earth radius (km), IUGG.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km between two (latitude, longitude) points in degrees
/// (haversine formula).
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let dlat = lat2 - lat1;
    let dlon = lon2 - lon1;
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// A warehouse that can serve the whole quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub warehouse_id: String,
    pub available: i64,
    pub latitude: f64,
    pub longitude: f64,
}

/// Orders `candidates` (all able to serve the quantity) by preference: the preferred
/// warehouse first, then nearest to `delivery` (when given) or most available; ties by
/// id so the choice is deterministic. The caller tries them in this order, because
/// another reservation may take the stock between reading and writing.
pub fn rank(
    mut candidates: Vec<Candidate>,
    preferred: Option<&str>,
    delivery: Option<(f64, f64)>,
) -> Vec<String> {
    candidates.sort_by(|a, b| {
        let pref = |c: &Candidate| preferred != Some(c.warehouse_id.as_str());
        pref(a)
            .cmp(&pref(b))
            .then_with(|| match delivery {
                Some(point) => haversine_km(point, (a.latitude, a.longitude))
                    .total_cmp(&haversine_km(point, (b.latitude, b.longitude))),
                None => b.available.cmp(&a.available),
            })
            .then_with(|| a.warehouse_id.cmp(&b.warehouse_id))
    });
    candidates.into_iter().map(|c| c.warehouse_id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, available: i64, lat: f64, lon: f64) -> Candidate {
        Candidate {
            warehouse_id: id.into(),
            available,
            latitude: lat,
            longitude: lon,
        }
    }

    #[test]
    fn known_distances() {
        // Paris – London ≈ 343.5 km; antipodes ≈ half the circumference.
        let d = haversine_km((48.8566, 2.3522), (51.5074, -0.1278));
        assert!((d - 343.5).abs() < 1.0, "{d}");
        let half = haversine_km((0.0, 0.0), (0.0, 180.0));
        assert!((half - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
        assert_eq!(haversine_km((10.0, 20.0), (10.0, 20.0)), 0.0);
    }

    #[test]
    fn distance_wraps_the_antimeridian() {
        // 179.9°E and 179.9°W are close, not half a world apart.
        assert!(haversine_km((0.0, 179.9), (0.0, -179.9)) < 25.0);
    }

    #[test]
    fn preferred_then_nearest_then_most_available() {
        let all = vec![
            c("far", 100, 51.5, -0.1), // London
            c("near", 1, 48.9, 2.4),   // Paris
            c("mid", 50, 50.8, 4.4),   // Brussels
        ];
        let paris = Some((48.85, 2.35));
        assert_eq!(rank(all.clone(), None, paris), ["near", "mid", "far"]);
        assert_eq!(
            rank(all.clone(), Some("far"), paris),
            ["far", "near", "mid"]
        );
        assert_eq!(rank(all.clone(), None, None), ["far", "mid", "near"]);
        // A preferred warehouse that cannot serve is simply not among the candidates.
        assert_eq!(rank(all, Some("gone"), None), ["far", "mid", "near"]);
    }

    #[test]
    fn ties_break_by_id() {
        let all = vec![c("b", 5, 0.0, 0.0), c("a", 5, 0.0, 0.0)];
        assert_eq!(rank(all.clone(), None, None), ["a", "b"]);
        assert_eq!(rank(all, None, Some((1.0, 1.0))), ["a", "b"]);
    }
}
