//! The dependency graph: an edge `a -> b` means a depends on b (b starts first). Every cycle is
//! refused (flow only caught 2-cycles), and the start order is a list of waves: everything in
//! a wave can start in parallel once the waves before it are up.

use super::AppId;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Read access to each application's dependencies.
pub trait Dependencies {
    fn dependencies_of(&self, app: &AppId) -> Option<&BTreeSet<AppId>>;
}

impl Dependencies for BTreeMap<AppId, BTreeSet<AppId>> {
    fn dependencies_of(&self, app: &AppId) -> Option<&BTreeSet<AppId>> {
        self.get(app)
    }
}

/// The cycle that giving `app` the dependencies `new` would close, as a path from `app` back
/// to itself (`a -> b -> c -> a`), or `None` when the graph stays acyclic.
pub fn cycle_if(
    app: &AppId,
    new: &BTreeSet<AppId>,
    graph: &impl Dependencies,
) -> Option<Vec<AppId>> {
    // A cycle through the new edges needs a path from one of them back to `app`.
    let mut parent: HashMap<&AppId, &AppId> = HashMap::new();
    let mut queue: VecDeque<&AppId> = VecDeque::new();
    for dependency in new {
        if parent.insert(dependency, app).is_none() {
            queue.push_back(dependency);
        }
    }
    while let Some(current) = queue.pop_front() {
        if current == app {
            let mut path = vec![app.clone()];
            let mut step = parent[current];
            while step != app {
                path.push(step.clone());
                step = parent[step];
            }
            path.push(app.clone());
            path.reverse();
            return Some(path);
        }
        for next in graph.dependencies_of(current).into_iter().flatten() {
            if !parent.contains_key(next) {
                parent.insert(next, current);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every application in waves: dependencies first, ids sorted within a wave. `Err` with the
/// applications that are on or behind a cycle (never in a catalog berth kept).
pub fn start_waves(
    graph: &BTreeMap<AppId, BTreeSet<AppId>>,
) -> Result<Vec<Vec<AppId>>, Vec<AppId>> {
    let mut waiting: HashMap<&AppId, usize> = HashMap::with_capacity(graph.len());
    let mut dependents: HashMap<&AppId, Vec<&AppId>> = HashMap::with_capacity(graph.len());
    for (app, dependencies) in graph {
        let known = dependencies.iter().filter(|d| graph.contains_key(*d));
        let mut count = 0;
        for dependency in known {
            dependents.entry(dependency).or_default().push(app);
            count += 1;
        }
        waiting.insert(app, count);
    }
    let mut wave: Vec<&AppId> = graph.keys().filter(|app| waiting[app] == 0).collect();
    let mut waves = Vec::new();
    let mut placed = 0;
    while !wave.is_empty() {
        wave.sort();
        placed += wave.len();
        let mut next = Vec::new();
        for app in &wave {
            for dependent in dependents.get(app).into_iter().flatten() {
                let left = waiting.get_mut(dependent).expect("every app is counted");
                *left -= 1;
                if *left == 0 {
                    next.push(*dependent);
                }
            }
        }
        waves.push(wave.into_iter().cloned().collect());
        wave = next;
    }
    if placed == graph.len() {
        Ok(waves)
    } else {
        Err(graph
            .keys()
            .filter(|app| waiting[app] > 0)
            .cloned()
            .collect())
    }
}

/// `app`'s transitive dependencies in start order, `app` last.
pub fn start_order_of(app: &AppId, graph: &BTreeMap<AppId, BTreeSet<AppId>>) -> Vec<AppId> {
    let mut needed: BTreeMap<AppId, BTreeSet<AppId>> = BTreeMap::new();
    let mut queue = VecDeque::from([app.clone()]);
    while let Some(current) = queue.pop_front() {
        if needed.contains_key(&current) {
            continue;
        }
        let dependencies = graph.get(&current).cloned().unwrap_or_default();
        queue.extend(dependencies.iter().cloned());
        needed.insert(current, dependencies);
    }
    let waves = start_waves(&needed).unwrap_or_default();
    waves.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> AppId {
        AppId::parse("id", text).unwrap()
    }

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<AppId, BTreeSet<AppId>> {
        edges
            .iter()
            .map(|(app, deps)| (id(app), deps.iter().map(|d| id(d)).collect()))
            .collect()
    }

    fn names(path: &[AppId]) -> Vec<&str> {
        path.iter().map(AppId::as_str).collect()
    }

    #[test]
    fn every_cycle_is_found_with_its_path() {
        let g = graph(&[("aa", &["bb"]), ("bb", &["cc"]), ("cc", &[])]);
        // cc -> aa closes aa -> bb -> cc -> aa, which flow let through.
        let cycle = cycle_if(&id("cc"), &[id("aa")].into(), &g).unwrap();
        assert_eq!(names(&cycle), vec!["cc", "aa", "bb", "cc"]);
        // A 2-cycle.
        let cycle = cycle_if(&id("bb"), &[id("aa"), id("cc")].into(), &g).unwrap();
        assert_eq!(names(&cycle), vec!["bb", "aa", "bb"]);
        // Fine: no path back.
        assert_eq!(cycle_if(&id("aa"), &[id("cc")].into(), &g), None);
    }

    #[test]
    fn waves_start_dependencies_first() {
        let g = graph(&[
            ("www", &["api"]),
            ("api", &["db1", "db2"]),
            ("db2", &[]),
            ("db1", &[]),
            ("worker", &["db1"]),
        ]);
        let waves = start_waves(&g).unwrap();
        let waves: Vec<Vec<&str>> = waves.iter().map(|w| names(w)).collect();
        assert_eq!(
            waves,
            vec![vec!["db1", "db2"], vec!["api", "worker"], vec!["www"]]
        );
        assert_eq!(
            names(&start_order_of(&id("www"), &g)),
            vec!["db1", "db2", "api", "www"]
        );
        assert_eq!(names(&start_order_of(&id("db1"), &g)), vec!["db1"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Applying random dependency edits, each refused when `cycle_if` finds a cycle,
            /// never leaves a cycle behind: the start order always places every application.
            #[test]
            fn refused_edits_keep_the_graph_acyclic(
                edits in proptest::collection::vec((0usize..10, proptest::collection::btree_set(0usize..10, 0..4)), 1..200)
            ) {
                let ids: Vec<AppId> = (0..10).map(|i| id(&format!("app{i}"))).collect();
                let mut g: BTreeMap<AppId, BTreeSet<AppId>> =
                    ids.iter().map(|i| (i.clone(), BTreeSet::new())).collect();
                for (app, deps) in edits {
                    let app = &ids[app];
                    let deps: BTreeSet<AppId> = deps.into_iter().map(|d| ids[d].clone()).filter(|d| d != app).collect();
                    if cycle_if(app, &deps, &g).is_none() {
                        g.insert(app.clone(), deps);
                    }
                }
                let waves = start_waves(&g);
                prop_assert!(waves.is_ok());
                prop_assert_eq!(waves.unwrap().iter().map(Vec::len).sum::<usize>(), 10);
            }
        }
    }
}
