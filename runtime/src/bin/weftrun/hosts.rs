//! Host lists: `--hosts a:2,b:2` and hostfiles, and which ranks go where.

/// One node of a job: its name and how many ranks it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub slots: usize,
}

/// One node's share of the job: ranks `first .. first + count`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub host: String,
    pub first: usize,
    pub count: usize,
}

/// The hosts `--hosts LIST` or `--hostfile PATH` name; `None` without either.
pub fn from_options(list: Option<&str>, file: Option<&str>) -> Result<Option<Vec<Host>>, String> {
    match (list, file) {
        (Some(list), _) => parse_list(list).map(Some),
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("hostfile {path}: {e}"))?;
            parse_file(&text, path).map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// Parses `a:2,b,c:4` (a host without a count has one slot).
pub fn parse_list(list: &str) -> Result<Vec<Host>, String> {
    let hosts = list
        .split(',')
        .map(|item| parse_entry(item.trim(), "--hosts"))
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.is_empty() {
        return Err("--hosts names no host".into());
    }
    Ok(hosts)
}

/// Parses a hostfile: one host per line as `name`, `name:N` (MPICH) or
/// `name slots=N` (Open MPI); `#` starts a comment.
pub fn parse_file(text: &str, path: &str) -> Result<Vec<Host>, String> {
    let mut hosts = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("{path} line {}", i + 1);
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        let mut host = parse_entry(first, &at)?;
        for word in words {
            match word.split_once('=') {
                Some(("slots", n)) if !first.contains(':') => host.slots = slot_count(n, &at)?,
                _ => return Err(format!("{at}: cannot read {word:?} (expected slots=N)")),
            }
        }
        hosts.push(host);
    }
    if hosts.is_empty() {
        return Err(format!("{path} names no host"));
    }
    Ok(hosts)
}

fn parse_entry(item: &str, at: &str) -> Result<Host, String> {
    let (name, slots) = match item.rsplit_once(':') {
        Some((name, n)) => (name, slot_count(n, at)?),
        None => (item, 1),
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(format!("{at}: {item:?} is not a host name"));
    }
    Ok(Host {
        name: name.into(),
        slots,
    })
}

fn slot_count(n: &str, at: &str) -> Result<usize, String> {
    match n.parse::<usize>() {
        Ok(k) if (1..=4096).contains(&k) => Ok(k),
        _ => Err(format!("{at}: {n:?} is not a rank count from 1 to 4096")),
    }
}

/// Fills the hosts in order with `np` ranks (all their slots when `None`);
/// hosts left without a rank are dropped.
pub fn distribute(hosts: &[Host], np: Option<usize>) -> Result<Vec<Share>, String> {
    let total: usize = hosts.iter().map(|h| h.slots).sum();
    let n = np.unwrap_or(total);
    if n > total {
        return Err(format!(
            "{n} ranks asked for but the hosts have {total} slots (give each host more, e.g. name:{})",
            n.div_ceil(hosts.len())
        ));
    }
    let mut shares = Vec::new();
    let mut first = 0;
    for h in hosts {
        let count = h.slots.min(n - first);
        if count == 0 {
            break;
        }
        shares.push(Share {
            host: h.name.clone(),
            first,
            count,
        });
        first += count;
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, slots: usize) -> Host {
        Host {
            name: name.into(),
            slots,
        }
    }

    #[test]
    fn lists_and_files() {
        assert_eq!(parse_list("a:2,b").unwrap(), vec![h("a", 2), h("b", 1)]);
        let file = "# nodes\nn1 slots=3\nn2:2   # two\n\nn3\n";
        assert_eq!(
            parse_file(file, "hf").unwrap(),
            vec![h("n1", 3), h("n2", 2), h("n3", 1)]
        );
    }

    #[test]
    fn bad_entries_are_named() {
        assert!(parse_list("a:0").unwrap_err().contains("\"0\""));
        assert!(parse_list("a:x").is_err());
        assert!(parse_list(",").is_err());
        assert!(parse_file("n1 cores=2", "hf")
            .unwrap_err()
            .contains("hf line 1"));
        assert!(parse_file("n1:2 slots=3", "hf").is_err());
        assert!(parse_file("# nothing\n", "hf").is_err());
    }

    #[test]
    fn ranks_fill_hosts_in_order() {
        let hosts = [h("a", 2), h("b", 2)];
        let s = distribute(&hosts, None).unwrap();
        assert_eq!((s[1].host.as_str(), s[1].first, s[1].count), ("b", 2, 2));
        let s = distribute(&hosts, Some(3)).unwrap();
        assert_eq!(s[1].count, 1);
        assert_eq!(distribute(&hosts, Some(2)).unwrap().len(), 1);
        assert!(distribute(&hosts, Some(5)).unwrap_err().contains("4 slots"));
    }
}
