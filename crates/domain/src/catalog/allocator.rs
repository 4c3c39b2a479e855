//! The port allocator: flowcommerce/registry's algorithm (`DefaultPortAllocator`), number for
//! number, with what it lacked: a ceiling, a configurable range, and every family member
//! looked at instead of the first 25.
//!
//! Ports come in blocks of ten (by default) starting at 6000. An application's *family* (its
//! id up to the last `-`) shares blocks: a new port goes first into a block the family already
//! uses, at the kind's offset (`nodejs` 0, `play` 1, `postgresql` 9) or, for a kind without
//! one, at the first free slot from the block's third port to its second-to-last. When no
//! family block has room, the port goes into the block after the highest external port ever
//! allocated (the high-water mark), so a freed block is never handed to a new family; a new
//! family only ever gets a block none of whose ports is taken (an explicit port elsewhere in
//! the range keeps its block to itself and moves nothing). Blocks at multiples of 100 and
//! blocks holding a denied port (8080) are skipped.

use super::CatalogError;

/// The range the allocator hands ports out of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// The first block's base (a multiple of 100 is itself skipped: 6000 → 6010).
    pub start: u16,
    pub block_size: u16,
    /// No port above this is handed out.
    pub ceiling: u16,
    /// Ports never handed out; their blocks are skipped.
    pub denied: Vec<u16>,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            start: 6000,
            block_size: 10,
            ceiling: 65_000,
            denied: vec![8080],
        }
    }
}

impl PortRange {
    /// The base of the block holding `port`.
    pub fn base(&self, port: u16) -> u16 {
        port - port % self.block_size
    }

    fn block_end(&self, base: u16) -> u32 {
        u32::from(base) + u32::from(self.block_size) - 1
    }

    /// Blocks at multiples of 100, holding a denied port, or reaching past the ceiling are
    /// never used.
    pub fn block_available(&self, base: u16) -> bool {
        !base.is_multiple_of(100)
            && self.block_end(base) <= u32::from(self.ceiling)
            && !self
                .denied
                .iter()
                .any(|d| *d >= base && u32::from(*d) <= self.block_end(base))
    }

    pub fn port_available(&self, port: u16, taken: &impl Fn(u16) -> bool) -> bool {
        !self.denied.contains(&port) && !taken(port)
    }

    /// The kind's slot in the block, or the first free one from base+2 to the
    /// second-to-last (flow's range for kinds without an offset).
    fn first_available(
        &self,
        base: u16,
        offset: Option<u8>,
        taken: &impl Fn(u16) -> bool,
    ) -> Option<u16> {
        match offset {
            Some(offset) => {
                let port = base + u16::from(offset);
                self.port_available(port, taken).then_some(port)
            }
            None => {
                (base + 2..=base + self.block_size - 2).find(|p| self.port_available(*p, taken))
            }
        }
    }
}

/// What the allocator needs to know about the catalog.
pub struct AllocationRequest<'a> {
    /// The distinct block bases of the family's ports, ascending.
    pub family_bases: &'a [u16],
    /// The highest external port ever allocated (`None` on an empty catalog).
    pub high_water: Option<u16>,
    /// The kind's offset inside a block.
    pub offset: Option<u8>,
}

/// Picks the port for a new assignment. `taken` says whether an external port is in use.
pub fn allocate(
    range: &PortRange,
    request: &AllocationRequest<'_>,
    taken: impl Fn(u16) -> bool,
) -> Result<u16, CatalogError> {
    for base in request.family_bases {
        if range.block_available(*base)
            && let Some(port) = range.first_available(*base, request.offset, &taken)
        {
            return Ok(port);
        }
    }
    // Then fresh blocks after the high-water mark (on an empty catalog, the start block).
    let mut last = match request.high_water {
        Some(port) => u32::from(range.base(port)),
        None => u32::from(range.start) - u32::from(range.block_size),
    };
    loop {
        last += u32::from(range.block_size);
        if last + u32::from(range.block_size) - 1 > u32::from(range.ceiling) {
            return Err(CatalogError::RangeExhausted {
                ceiling: range.ceiling,
            });
        }
        let base = last as u16;
        if range.block_available(base)
            && !(base..=base + (range.block_size - 1)).any(&taken)
            && let Some(port) = range.first_available(base, request.offset, &taken)
        {
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A toy catalog: ports by owner, as flow's tables held them.
    #[derive(Default)]
    struct Catalog {
        ports: BTreeMap<u16, String>,
        high_water: Option<u16>,
    }

    fn offset(kind: &str) -> Option<u8> {
        match kind {
            "nodejs" => Some(0),
            "play" => Some(1),
            "postgresql" => Some(9),
            _ => None,
        }
    }

    impl Catalog {
        fn allocate(
            &mut self,
            range: &PortRange,
            app: &str,
            kind: &str,
        ) -> Result<u16, CatalogError> {
            let family = super::super::family(app);
            let bases: BTreeSet<u16> = self
                .ports
                .iter()
                .filter(|(_, owner)| {
                    owner.as_str() == family
                        || owner
                            .strip_prefix(family)
                            .is_some_and(|rest| rest.starts_with('-'))
                })
                .map(|(port, _)| range.base(*port))
                .collect();
            let bases: Vec<u16> = bases.into_iter().collect();
            let port = allocate(
                range,
                &AllocationRequest {
                    family_bases: &bases,
                    high_water: self.high_water,
                    offset: offset(kind),
                },
                |p| self.ports.contains_key(&p),
            )?;
            self.ports.insert(port, app.to_string());
            self.high_water = self.high_water.max(Some(port));
            Ok(port)
        }
    }

    #[test]
    fn reproduces_flows_worked_example_number_for_number() {
        let range = PortRange::default();
        let mut catalog = Catalog::default();
        let table = [
            ("registry", "play", 6011),
            ("registry-postgresql", "postgresql", 6019),
            ("www", "nodejs", 6020),
            ("user", "play", 6031),
            ("registry", "nodejs", 6010),
            ("registry-api2", "play", 6041),
            ("www", "redis", 6022),
        ];
        for (app, kind, expected) in table {
            assert_eq!(
                catalog.allocate(&range, app, kind).unwrap(),
                expected,
                "{app} {kind}"
            );
        }
    }

    #[test]
    fn blocks_and_ports_flow_denies() {
        let range = PortRange::default();
        for denied in [6000, 6100, 7000, 8000, 8080, 8900] {
            assert!(!range.block_available(denied), "{denied}");
        }
        for allowed in [6120, 7080, 8910] {
            assert!(range.block_available(allowed), "{allowed}");
        }
        let nothing_taken = |_: u16| false;
        assert!(!range.port_available(8080, &nothing_taken));
        assert!(range.port_available(8124, &nothing_taken));
        assert_eq!(range.base(6019), 6010);
        assert_eq!(range.base(6020), 6020);
    }

    #[test]
    fn new_families_jump_over_denied_blocks() {
        let range = PortRange::default();
        // With the high-water mark at 8070 the next block is 8080 (denied) then 8090.
        let port = allocate(
            &range,
            &AllocationRequest {
                family_bases: &[],
                high_water: Some(8070),
                offset: Some(0),
            },
            |_| false,
        );
        assert_eq!(port.unwrap(), 8090);
        // An explicit port far up pushes every later new family above it.
        let port = allocate(
            &range,
            &AllocationRequest {
                family_bases: &[],
                high_water: Some(30_000),
                offset: Some(1),
            },
            |_| false,
        );
        assert_eq!(port.unwrap(), 30_011);
    }

    #[test]
    fn a_family_fills_its_block_then_moves_on() {
        let range = PortRange::default();
        let mut catalog = Catalog::default();
        // ui / api / db of one family: base+0, +1, +9.
        assert_eq!(catalog.allocate(&range, "shop", "nodejs").unwrap(), 6010);
        assert_eq!(catalog.allocate(&range, "shop-api", "play").unwrap(), 6011);
        assert_eq!(
            catalog.allocate(&range, "shop-db", "postgresql").unwrap(),
            6019
        );
        // Custom kinds take base+2..base+8, then the next block.
        for expected in 6012..=6018 {
            assert_eq!(
                catalog.allocate(&range, "shop-cache", "redis").unwrap(),
                expected
            );
        }
        assert_eq!(
            catalog.allocate(&range, "shop-cache", "redis").unwrap(),
            6022
        );
        // A second play in the family: its slot is taken in both blocks, so a fresh one.
        assert_eq!(
            catalog.allocate(&range, "shop-admin", "play").unwrap(),
            6021
        );
        assert_eq!(
            catalog.allocate(&range, "shop-admin2", "play").unwrap(),
            6031
        );
    }

    #[test]
    fn the_range_has_a_ceiling() {
        let range = PortRange {
            start: 6000,
            block_size: 10,
            ceiling: 6029,
            denied: vec![],
        };
        let mut catalog = Catalog::default();
        assert_eq!(catalog.allocate(&range, "a", "play").unwrap(), 6011);
        assert_eq!(catalog.allocate(&range, "b", "play").unwrap(), 6021);
        assert_eq!(
            catalog.allocate(&range, "c", "play"),
            Err(CatalogError::RangeExhausted { ceiling: 6029 })
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the sequence of requests, no two assignments share a port, every port is
            /// inside the range and outside the denied ones, and exhaustion is an error.
            #[test]
            fn allocations_never_collide_and_stay_in_range(
                requests in proptest::collection::vec((0usize..12, 0usize..5), 1..300)
            ) {
                let range = PortRange { start: 6000, block_size: 10, ceiling: 7_500, denied: vec![6555, 7000] };
                let apps = ["a", "a-api", "a-db", "b", "b-x", "c", "c-1", "c-2", "d", "e-f", "e-f-g", "h"];
                let kinds = ["nodejs", "play", "postgresql", "redis", "kafka"];
                let mut catalog = Catalog::default();
                for (app, kind) in requests {
                    let before = catalog.ports.len();
                    match catalog.allocate(&range, apps[app], kinds[kind]) {
                        Ok(port) => {
                            // A new key: a port handed out twice would have replaced its owner.
                            prop_assert_eq!(catalog.ports.len(), before + 1);
                            prop_assert!(port >= range.start && port <= range.ceiling);
                            prop_assert!(!range.denied.contains(&port));
                            prop_assert!(range.block_available(range.base(port)));
                        }
                        Err(error) => prop_assert_eq!(error, CatalogError::RangeExhausted { ceiling: 7_500 }),
                    }
                }
            }
        }
    }
}
