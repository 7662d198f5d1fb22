//! Dependency cycles among the services of one manifest (`depends_on`).

use crate::schema::Manifest;
use std::collections::BTreeMap;

/// Every dependency cycle, each as the list of names with the first repeated at the end.
pub(super) fn find_cycles(manifest: &Manifest) -> Vec<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = manifest
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut color: BTreeMap<&str, u8> = BTreeMap::new();
    let mut cycles = Vec::new();
    fn visit<'a>(
        node: &'a str,
        deps: &BTreeMap<&'a str, &'a [String]>,
        color: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        color.insert(node, 1);
        stack.push(node);
        for dep in deps.get(node).copied().unwrap_or_default() {
            let dep = dep.as_str();
            if dep == node || !deps.contains_key(dep) {
                continue; // self-dependency and unknown names are reported on their own
            }
            match color.get(dep).copied().unwrap_or(0) {
                0 => visit(dep, deps, color, stack, cycles),
                1 => {
                    let start = stack.iter().position(|s| *s == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(dep.to_string());
                    cycles.push(cycle);
                }
                _ => {}
            }
        }
        stack.pop();
        color.insert(node, 2);
    }
    for name in deps.keys() {
        if color.get(name).copied().unwrap_or(0) == 0 {
            visit(name, &deps, &mut color, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}
