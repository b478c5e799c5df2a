//! The fast UDP path allocates nothing per query: a counting global
//! allocator wraps the system one, and answering a mix of queries must not
//! move the counter. (A separate test binary: the allocator is global.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use cellns::dns::fast::{Fast, RESPONSE_BUF, respond};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

#[test]
fn fast_path_answers_without_allocating() {
    // use1-a is probed, and health found one of its endpoints down: the
    // answers for acme leave it out (the view's filtered endpoints).
    let text = format!(
        "{}\n[cells.use1-a.health]\nprobe = \"tcp\"\nport = 443\n",
        cellns::map::EXAMPLE_MAP
    );
    let map = cellns::map::load_str(cellns::map::Source {
        text: &text,
        format: cellns::map::Format::Toml,
        name: "probed.toml",
    })
    .unwrap();
    let mut conditions = cellns::live::Conditions::default();
    conditions
        .endpoints_down
        .insert("use1-a".into(), ["192.0.2.11".parse().unwrap()].into());
    let store = cellns::dns::prepared::new_store(
        std::sync::Arc::new(map),
        conditions,
        cellns::live::Serials::open(None),
    );
    let snap = store.load();
    let mut buf = [0u8; RESPONSE_BUF];
    let Fast::Answered(n, ..) = respond(
        &snap,
        &query("acme.cells.example.com.", RecordType::A, false),
        &mut buf,
    ) else {
        panic!("acme A not answered on the fast path")
    };
    let answer = Message::from_vec(&buf[..n]).unwrap();
    let addrs: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(addrs, ["192.0.2.10"], "the down endpoint is left out");
    let mut queries = Vec::new();
    for name in [
        "acme.cells.example.com.",
        "GLOBEX.cells.example.com.",
        "nobody.cells.example.com.",
        "x.example.org.",
    ] {
        for t in [RecordType::A, RecordType::AAAA, RecordType::MX] {
            for edns in [false, true] {
                queries.push(query(name, t, edns));
            }
        }
    }
    let mut out = [0u8; RESPONSE_BUF];
    // Warm up (lazy statics, if any), then count.
    for q in &queries {
        assert!(matches!(respond(&snap, q, &mut out), Fast::Answered(..)));
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut answered = 0;
    for _ in 0..1000 {
        for q in &queries {
            if let Fast::Answered(n, ..) = respond(&snap, q, &mut out) {
                answered += n;
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(answered > 0);
    assert_eq!(
        after - before,
        0,
        "the fast path allocated {} times in {} queries",
        after - before,
        1000 * queries.len()
    );
}
