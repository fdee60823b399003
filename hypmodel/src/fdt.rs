//! A small flattened-device-tree reader and rewriter.
//!
//! Our own rather than `dtoolkit`'s writer: hypmodel needs exactly three edits (the `/psci`
//! method, `/chosen/bootargs`, the `reg` of the memory nodes) plus one memory reservation,
//! without a heap. A single pass that copies the structure block token by token and
//! replaces those properties is about as much code as driving a general editor, needs no
//! allocator, and is easy to unit-test byte for byte.

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// The version the rewritten tree declares, and the oldest it is compatible with.
const VERSION: u32 = 17;
const LAST_COMP_VERSION: u32 = 16;
/// The header's size: enough to read `totalsize` before the whole tree is mapped.
pub const HEADER_SIZE: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    BadMagic,
    Truncated,
    BadToken(u32),
    BadCells,
    NoSpace,
}

impl core::fmt::Display for FdtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FdtError::BadMagic => write!(f, "no device tree (bad magic)"),
            FdtError::Truncated => write!(f, "device tree truncated"),
            FdtError::BadToken(t) => write!(f, "bad device tree token {t:#x}"),
            FdtError::BadCells => write!(f, "unsupported #address-cells/#size-cells"),
            FdtError::NoSpace => write!(f, "rewritten device tree does not fit"),
        }
    }
}

fn be32(d: &[u8], off: usize) -> Result<u32, FdtError> {
    let b = d.get(off..off + 4).ok_or(FdtError::Truncated)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be64(d: &[u8], off: usize) -> Result<u64, FdtError> {
    Ok((u64::from(be32(d, off)?) << 32) | u64::from(be32(d, off + 4)?))
}

/// `totalsize` from a tree header, after checking the magic.
pub fn total_size(d: &[u8]) -> Result<usize, FdtError> {
    if be32(d, 0)? != MAGIC {
        return Err(FdtError::BadMagic);
    }
    Ok(be32(d, 4)? as usize)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token<'a> {
    Begin(&'a [u8]),
    End,
    Prop {
        name: &'a [u8],
        nameoff: u32,
        value: &'a [u8],
    },
}

#[derive(Clone, Copy)]
pub struct Fdt<'a> {
    data: &'a [u8],
    st: &'a [u8],
    strings: &'a [u8],
    rsv_off: usize,
    boot_cpuid: u32,
}

pub struct Tokens<'a> {
    fdt: Fdt<'a>,
    pos: usize,
    done: bool,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Result<Token<'a>, FdtError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r.transpose()
    }
}

impl<'a> Tokens<'a> {
    fn step(&mut self) -> Result<Option<Token<'a>>, FdtError> {
        let st = self.fdt.st;
        loop {
            let tok = be32(st, self.pos)?;
            self.pos += 4;
            match tok {
                NOP => continue,
                END => return Ok(None),
                END_NODE => return Ok(Some(Token::End)),
                BEGIN_NODE => {
                    let rest = st.get(self.pos..).ok_or(FdtError::Truncated)?;
                    let n = rest
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or(FdtError::Truncated)?;
                    self.pos += (n + 1 + 3) & !3;
                    return Ok(Some(Token::Begin(&rest[..n])));
                }
                PROP => {
                    let len = be32(st, self.pos)? as usize;
                    let nameoff = be32(st, self.pos + 4)?;
                    let value = st
                        .get(self.pos + 8..self.pos + 8 + len)
                        .ok_or(FdtError::Truncated)?;
                    self.pos += 8 + ((len + 3) & !3);
                    let s = self
                        .fdt
                        .strings
                        .get(nameoff as usize..)
                        .ok_or(FdtError::Truncated)?;
                    let n = s.iter().position(|&b| b == 0).ok_or(FdtError::Truncated)?;
                    return Ok(Some(Token::Prop {
                        name: &s[..n],
                        nameoff,
                        value,
                    }));
                }
                t => return Err(FdtError::BadToken(t)),
            }
        }
    }
}

/// Does node `name` (maybe with a unit address) match path component `comp`?
fn name_matches(name: &[u8], comp: &[u8]) -> bool {
    if name == comp {
        return true;
    }
    !comp.contains(&b'@') && name.split(|&b| b == b'@').next() == Some(comp)
}

fn is_memory_node(name: &[u8]) -> bool {
    name_matches(name, b"memory")
}

/// Reads big-endian `cells`-cell numbers.
fn read_cells(v: &[u8], off: usize, cells: u32) -> Result<u64, FdtError> {
    match cells {
        1 => Ok(u64::from(be32(v, off)?)),
        2 => be64(v, off),
        _ => Err(FdtError::BadCells),
    }
}

impl<'a> Fdt<'a> {
    pub fn new(data: &'a [u8]) -> Result<Fdt<'a>, FdtError> {
        let total = total_size(data)?;
        let data = data.get(..total).ok_or(FdtError::Truncated)?;
        let off_st = be32(data, 8)? as usize;
        let off_str = be32(data, 12)? as usize;
        let rsv_off = be32(data, 16)? as usize;
        let version = be32(data, 20)?;
        let boot_cpuid = be32(data, 28)?;
        let str_size = be32(data, 32)? as usize;
        let st_size = if version >= 17 {
            be32(data, 36)? as usize
        } else {
            total.saturating_sub(off_st)
        };
        let st = data
            .get(off_st..off_st + st_size)
            .ok_or(FdtError::Truncated)?;
        let strings = data
            .get(off_str..off_str + str_size)
            .ok_or(FdtError::Truncated)?;
        if rsv_off >= total {
            return Err(FdtError::Truncated);
        }
        Ok(Fdt {
            data,
            st,
            strings,
            rsv_off,
            boot_cpuid,
        })
    }

    pub fn tokens(&self) -> Tokens<'a> {
        Tokens {
            fdt: *self,
            pos: 0,
            done: false,
        }
    }

    /// The value of property `prop` of the node at `path` ("/chosen", "/psci",
    /// "/pl011@9000000"; a component without a unit address matches any).
    pub fn prop(&self, path: &str, prop: &str) -> Option<&'a [u8]> {
        let comps: [&[u8]; 8] = {
            let mut c: [&[u8]; 8] = [b""; 8];
            for (n, p) in path.split('/').filter(|p| !p.is_empty()).enumerate() {
                *c.get_mut(n)? = p.as_bytes();
            }
            c
        };
        let ncomp = comps.iter().position(|c| c.is_empty()).unwrap_or(8);
        let mut depth = 0usize; // nesting depth; the root is depth 1
        let mut matched = 0usize; // how many components the current branch matched
        for t in self.tokens() {
            match t.ok()? {
                Token::Begin(name) => {
                    depth += 1;
                    if depth >= 2
                        && matched == depth - 2
                        && depth - 2 < ncomp
                        && name_matches(name, comps[depth - 2])
                    {
                        matched = depth - 1;
                    }
                }
                Token::End => {
                    if matched == depth - 1 && matched > 0 {
                        matched -= 1;
                    }
                    depth = depth.checked_sub(1)?;
                }
                Token::Prop { name, value, .. } => {
                    if matched == ncomp && depth == ncomp + 1 && name == prop.as_bytes() {
                        return Some(value);
                    }
                }
            }
        }
        None
    }

    /// A string property without its terminating NUL.
    pub fn prop_str(&self, path: &str, prop: &str) -> Option<&'a str> {
        let v = self.prop(path, prop)?;
        let v = v.split(|&b| b == 0).next()?;
        core::str::from_utf8(v).ok()
    }

    fn root_cells(&self) -> (u32, u32) {
        let get = |p| self.prop("/", p).and_then(|v| be32(v, 0).ok());
        (
            get("#address-cells").unwrap_or(2),
            get("#size-cells").unwrap_or(1),
        )
    }

    /// Calls `f(base, size)` for every `reg` entry of every top-level memory node.
    pub fn for_each_memory(&self, mut f: impl FnMut(u64, u64)) -> Result<(), FdtError> {
        let (ac, sc) = self.root_cells();
        let mut depth = 0;
        let mut in_mem = false;
        for t in self.tokens() {
            match t? {
                Token::Begin(name) => {
                    depth += 1;
                    in_mem = depth == 2 && is_memory_node(name);
                }
                Token::End => {
                    depth -= 1;
                    in_mem = false;
                }
                Token::Prop {
                    name: b"reg",
                    value,
                    ..
                } if in_mem => {
                    let step = 4 * (ac + sc) as usize;
                    for e in value.chunks_exact(step) {
                        f(read_cells(e, 0, ac)?, read_cells(e, 4 * ac as usize, sc)?);
                    }
                }
                Token::Prop { .. } => {}
            }
        }
        Ok(())
    }

    /// Calls `f` for every child of the root whose `compatible` lists `compat` (the
    /// virtio-mmio transports, the PCI host bridge of QEMU `virt`), in tree order.
    pub fn for_each_compatible(
        &self,
        compat: &str,
        mut f: impl FnMut(&Node<'a>),
    ) -> Result<(), FdtError> {
        let cells = self.root_cells();
        let empty: &'a [u8] = &[];
        let mut node = Node {
            name: empty,
            compatible: empty,
            reg: empty,
            ranges: empty,
            bus_range: empty,
            cells,
        };
        let mut depth = 0usize;
        for t in self.tokens() {
            match t? {
                Token::Begin(name) => {
                    depth += 1;
                    if depth == 2 {
                        node = Node {
                            name,
                            compatible: empty,
                            reg: empty,
                            ranges: empty,
                            bus_range: empty,
                            cells,
                        };
                    }
                }
                Token::End => {
                    if depth == 2 && node.is_compatible(compat) {
                        f(&node);
                    }
                    depth = depth.checked_sub(1).ok_or(FdtError::BadToken(END_NODE))?;
                }
                Token::Prop { name, value, .. } if depth == 2 => match name {
                    b"compatible" => node.compatible = value,
                    b"reg" => node.reg = value,
                    b"ranges" => node.ranges = value,
                    b"bus-range" => node.bus_range = value,
                    _ => {}
                },
                Token::Prop { .. } => {}
            }
        }
        Ok(())
    }

    /// Calls `f(mpidr)` for each `/cpus/cpu@N` node's `reg`.
    pub fn for_each_cpu(&self, mut f: impl FnMut(u64)) -> Result<(), FdtError> {
        let ac = self
            .prop("/cpus", "#address-cells")
            .and_then(|v| be32(v, 0).ok())
            .unwrap_or(1);
        let mut depth = 0;
        let mut in_cpus = false;
        let mut in_cpu = false;
        for t in self.tokens() {
            match t? {
                Token::Begin(name) => {
                    depth += 1;
                    if depth == 2 {
                        in_cpus = name == b"cpus";
                    }
                    in_cpu = depth == 3 && in_cpus && name_matches(name, b"cpu");
                }
                Token::End => {
                    depth -= 1;
                    in_cpu = false;
                }
                Token::Prop {
                    name: b"reg",
                    value,
                    ..
                } if in_cpu => f(read_cells(value, 0, ac)?),
                Token::Prop { .. } => {}
            }
        }
        Ok(())
    }
}

/// A child of the root node, with the properties hypmodel reads from devices.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    pub name: &'a [u8],
    pub compatible: &'a [u8],
    pub reg: &'a [u8],
    pub ranges: &'a [u8],
    pub bus_range: &'a [u8],
    /// The root's #address-cells and #size-cells (a root child's `reg` is in them).
    pub cells: (u32, u32),
}

impl Node<'_> {
    /// Is `compat` one of the strings of `compatible`?
    pub fn is_compatible(&self, compat: &str) -> bool {
        self.compatible
            .split(|&b| b == 0)
            .any(|c| c == compat.as_bytes())
    }

    /// The `i`-th `reg` entry, base and size.
    pub fn reg(&self, i: usize) -> Option<(u64, u64)> {
        let (ac, sc) = self.cells;
        let step = 4 * (ac + sc) as usize;
        let e = self.reg.get(i * step..(i + 1) * step)?;
        Some((
            read_cells(e, 0, ac).ok()?,
            read_cells(e, 4 * ac as usize, sc).ok()?,
        ))
    }
}

/// `[base, base + size)` minus `hole`: up to two ranges.
pub fn subtract(base: u64, size: u64, hole: (u64, u64)) -> [Option<(u64, u64)>; 2] {
    let end = base.saturating_add(size);
    let (hb, he) = (hole.0, hole.0.saturating_add(hole.1));
    if he <= base || hb >= end || hole.1 == 0 {
        return [Some((base, size)), None];
    }
    let below = (hb > base).then(|| (base, hb - base));
    let above = (he < end).then(|| (he, end - he));
    [below, above]
}

/// What the guest's tree gets.
pub struct Edits<'e> {
    /// New `/chosen/bootargs` (without NUL).
    pub bootargs: &'e [u8],
    /// New `/psci` `method` (without NUL).
    pub psci_method: &'e [u8],
    /// Removed from every memory node's `reg`.
    pub hole: (u64, u64),
    /// Added to the memory reservation block.
    pub reserve: &'e [(u64, u64)],
}

struct Out<'o> {
    buf: &'o mut [u8],
    pos: usize,
}

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), FdtError> {
        let dst = self
            .buf
            .get_mut(self.pos..self.pos + b.len())
            .ok_or(FdtError::NoSpace)?;
        dst.copy_from_slice(b);
        self.pos += b.len();
        Ok(())
    }
    fn u32(&mut self, v: u32) -> Result<(), FdtError> {
        self.bytes(&v.to_be_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), FdtError> {
        self.bytes(&v.to_be_bytes())
    }
    fn align4(&mut self) -> Result<(), FdtError> {
        while !self.pos.is_multiple_of(4) {
            self.bytes(&[0])?;
        }
        Ok(())
    }
    fn prop(&mut self, nameoff: u32, value: &[u8], nul: bool) -> Result<(), FdtError> {
        self.u32(PROP)?;
        self.u32((value.len() + usize::from(nul)) as u32)?;
        self.u32(nameoff)?;
        self.bytes(value)?;
        if nul {
            self.bytes(&[0])?;
        }
        self.align4()
    }
    fn cells(&mut self, v: u64, cells: u32) -> Result<(), FdtError> {
        match cells {
            1 => self.u32(u32::try_from(v).map_err(|_| FdtError::BadCells)?),
            2 => self.u64(v),
            _ => Err(FdtError::BadCells),
        }
    }
}

fn find_string(strings: &[u8], s: &[u8]) -> Option<u32> {
    let mut off = 0;
    for part in strings.split(|&b| b == 0) {
        if part == s {
            return Some(off as u32);
        }
        off += part.len() + 1;
    }
    None
}

/// Writes the guest's tree into `out`; returns its size.
pub fn rewrite(src: &Fdt<'_>, e: &Edits<'_>, out: &mut [u8]) -> Result<usize, FdtError> {
    let mut o = Out {
        buf: out,
        pos: HEADER_SIZE,
    };
    let rsv_off = o.pos;
    write_reservations(&mut o, src, e.reserve)?;
    // A tree without `bootargs` anywhere gets the name at the end of its strings.
    let bootargs_name = find_string(src.strings, b"bootargs");
    let st_off = o.pos;
    let mut copy = StructCopy::new(src, e, bootargs_name.unwrap_or(src.strings.len() as u32));
    for t in src.tokens() {
        match t? {
            Token::Begin(name) => copy.begin(&mut o, name)?,
            Token::End => copy.end(&mut o)?,
            Token::Prop {
                name,
                nameoff,
                value,
            } => copy.prop(&mut o, name, nameoff, value)?,
        }
    }
    o.u32(END)?;
    let st_size = o.pos - st_off;
    let str_off = o.pos;
    o.bytes(src.strings)?;
    if bootargs_name.is_none() {
        o.bytes(b"bootargs\0")?;
    }
    let str_size = o.pos - str_off;
    while !o.pos.is_multiple_of(8) {
        o.bytes(&[0])?;
    }
    let total = o.pos;
    let hdr: [u32; 10] = [
        MAGIC,
        total as u32,
        st_off as u32,
        str_off as u32,
        rsv_off as u32,
        VERSION,
        LAST_COMP_VERSION,
        src.boot_cpuid,
        str_size as u32,
        st_size as u32,
    ];
    for (i, w) in hdr.iter().enumerate() {
        o.buf[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
    Ok(total)
}

/// The memory reservation block: the source's entries, `extra`, the terminating empty entry.
fn write_reservations(
    o: &mut Out<'_>,
    src: &Fdt<'_>,
    extra: &[(u64, u64)],
) -> Result<(), FdtError> {
    let mut p = src.rsv_off;
    loop {
        let (a, s) = (be64(src.data, p)?, be64(src.data, p + 8)?);
        p += 16;
        if a == 0 && s == 0 {
            break;
        }
        o.u64(a)?;
        o.u64(s)?;
    }
    for &(a, s) in extra {
        o.u64(a)?;
        o.u64(s)?;
    }
    o.u64(0)?;
    o.u64(0)
}

/// The root's children whose properties the guest's tree changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edited {
    Chosen,
    Psci,
    Memory,
    None,
}

/// Copies the structure block token by token, applying the edits to the root's children
/// (depth 2; their own children are copied as they are).
struct StructCopy<'e> {
    e: &'e Edits<'e>,
    /// The root's #address-cells and #size-cells, for the memory nodes' `reg`.
    cells: (u32, u32),
    /// Where `bootargs` is (or will be) in the strings block.
    bootargs_name: u32,
    depth: usize,
    /// The depth-2 node being copied.
    node: Edited,
    chosen_seen: bool,
    bootargs_done: bool,
}

impl<'e> StructCopy<'e> {
    fn new(src: &Fdt<'_>, e: &'e Edits<'e>, bootargs_name: u32) -> Self {
        StructCopy {
            e,
            cells: src.root_cells(),
            bootargs_name,
            depth: 0,
            node: Edited::None,
            chosen_seen: false,
            bootargs_done: false,
        }
    }

    fn begin(&mut self, o: &mut Out<'_>, name: &[u8]) -> Result<(), FdtError> {
        self.depth += 1;
        if self.depth == 2 {
            self.node = if name == b"chosen" {
                Edited::Chosen
            } else if name_matches(name, b"psci") {
                Edited::Psci
            } else if is_memory_node(name) {
                Edited::Memory
            } else {
                Edited::None
            };
            self.chosen_seen |= self.node == Edited::Chosen;
        }
        o.u32(BEGIN_NODE)?;
        o.bytes(name)?;
        o.bytes(&[0])?;
        o.align4()
    }

    fn end(&mut self, o: &mut Out<'_>) -> Result<(), FdtError> {
        // A /chosen without bootargs gets them last; a tree without /chosen gets one last.
        if self.depth == 2 && self.node == Edited::Chosen && !self.bootargs_done {
            o.prop(self.bootargs_name, self.e.bootargs, true)?;
            self.bootargs_done = true;
        }
        if self.depth == 1 && !self.chosen_seen {
            o.u32(BEGIN_NODE)?;
            o.bytes(b"chosen\0\0")?;
            o.prop(self.bootargs_name, self.e.bootargs, true)?;
            o.u32(END_NODE)?;
        }
        if self.depth == 2 {
            self.node = Edited::None;
        }
        self.depth = self
            .depth
            .checked_sub(1)
            .ok_or(FdtError::BadToken(END_NODE))?;
        o.u32(END_NODE)
    }

    fn prop(
        &mut self,
        o: &mut Out<'_>,
        name: &[u8],
        nameoff: u32,
        value: &[u8],
    ) -> Result<(), FdtError> {
        let node = if self.depth == 2 {
            self.node
        } else {
            Edited::None
        };
        match node {
            Edited::Chosen if name == b"bootargs" => {
                self.bootargs_done = true;
                o.prop(nameoff, self.e.bootargs, true)
            }
            Edited::Psci if name == b"method" => o.prop(nameoff, self.e.psci_method, true),
            Edited::Memory if name == b"reg" => {
                write_memory_reg(o, nameoff, value, self.cells, self.e.hole)
            }
            _ => o.prop(nameoff, value, false),
        }
    }
}

/// A memory node's `reg` with `hole` cut out of each range (which leaves 0, 1 or 2 ranges).
fn write_memory_reg(
    o: &mut Out<'_>,
    nameoff: u32,
    value: &[u8],
    (ac, sc): (u32, u32),
    hole: (u64, u64),
) -> Result<(), FdtError> {
    let step = 4 * (ac + sc) as usize;
    let pieces = |ent: &[u8]| -> Result<[Option<(u64, u64)>; 2], FdtError> {
        let (base, size) = (
            read_cells(ent, 0, ac)?,
            read_cells(ent, 4 * ac as usize, sc)?,
        );
        Ok(subtract(base, size, hole))
    };
    let mut n = 0usize;
    for ent in value.chunks_exact(step) {
        n += pieces(ent)?.iter().flatten().count();
    }
    o.u32(PROP)?;
    o.u32((n * step) as u32)?;
    o.u32(nameoff)?;
    for ent in value.chunks_exact(step) {
        for (rb, rs) in pieces(ent)?.into_iter().flatten() {
            o.cells(rb, ac)?;
            o.cells(rs, sc)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal tree builder for tests (and for the guest-side expectations).
    pub struct Builder {
        st: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Default for Builder {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Builder {
        pub fn new() -> Self {
            Builder {
                st: vec![],
                strings: vec![],
            }
        }
        pub fn begin(&mut self, name: &str) -> &mut Self {
            self.st.extend(BEGIN_NODE.to_be_bytes());
            self.st.extend(name.as_bytes());
            self.st.push(0);
            while !self.st.len().is_multiple_of(4) {
                self.st.push(0);
            }
            self
        }
        pub fn end(&mut self) -> &mut Self {
            self.st.extend(END_NODE.to_be_bytes());
            self
        }
        pub fn prop(&mut self, name: &str, v: &[u8]) -> &mut Self {
            let off = find_string(&self.strings, name.as_bytes()).unwrap_or_else(|| {
                let o = self.strings.len() as u32;
                self.strings.extend(name.as_bytes());
                self.strings.push(0);
                o
            });
            self.st.extend(PROP.to_be_bytes());
            self.st.extend((v.len() as u32).to_be_bytes());
            self.st.extend(off.to_be_bytes());
            self.st.extend(v);
            while !self.st.len().is_multiple_of(4) {
                self.st.push(0);
            }
            self
        }
        pub fn nop(&mut self) -> &mut Self {
            self.st.extend(NOP.to_be_bytes());
            self
        }
        pub fn build(&mut self, rsv: &[(u64, u64)]) -> Vec<u8> {
            let mut st = self.st.clone();
            st.extend(END.to_be_bytes());
            let mut d = vec![0u8; HEADER_SIZE];
            let rsv_off = d.len();
            for &(a, s) in rsv.iter().chain([(0, 0)].iter()) {
                d.extend(a.to_be_bytes());
                d.extend(s.to_be_bytes());
            }
            let st_off = d.len();
            d.extend(&st);
            let str_off = d.len();
            d.extend(&self.strings);
            let total = d.len();
            let h = [
                MAGIC,
                total as u32,
                st_off as u32,
                str_off as u32,
                rsv_off as u32,
                17,
                16,
                0,
                self.strings.len() as u32,
                st.len() as u32,
            ];
            for (i, w) in h.iter().enumerate() {
                d[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            d
        }
    }

    fn cells(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    fn qemu_like(with_bootargs: bool) -> Vec<u8> {
        let mut b = Builder::new();
        b.begin("")
            .prop("#address-cells", &cells(&[2]))
            .prop("#size-cells", &cells(&[2]));
        b.begin("psci")
            .prop("compatible", b"arm,psci-1.0\0")
            .prop("method", b"smc\0")
            .end();
        b.begin("memory@40000000")
            .prop("reg", &cells(&[0, 0x4000_0000, 0, 0x2000_0000]))
            .prop("device_type", b"memory\0")
            .end();
        b.begin("cpus")
            .prop("#address-cells", &cells(&[1]))
            .prop("#size-cells", &cells(&[0]));
        for i in 0..2 {
            b.begin(&format!("cpu@{i}")).prop("reg", &cells(&[i])).end();
        }
        b.end();
        b.begin("pl011@9000000")
            .prop("reg", &cells(&[0, 0x0900_0000, 0, 0x1000]))
            .end();
        b.begin("chosen")
            .nop()
            .prop("stdout-path", b"/pl011@9000000\0");
        if with_bootargs {
            b.prop("bootargs", b"hypmodel.trace -- only=guard:*\0");
        }
        b.end();
        b.end();
        b.build(&[(0x4800_0000, 0x1000)])
    }

    #[test]
    fn reads_properties() {
        let d = qemu_like(true);
        let f = Fdt::new(&d).unwrap();
        assert_eq!(f.prop_str("/psci", "method"), Some("smc"));
        assert_eq!(f.prop_str("/chosen", "stdout-path"), Some("/pl011@9000000"));
        assert_eq!(f.prop("/pl011@9000000", "reg").unwrap().len(), 16);
        assert_eq!(
            f.prop("/pl011", "reg").unwrap().len(),
            16,
            "unit address optional"
        );
        assert_eq!(f.prop("/pl011@9000001", "reg"), None);
        assert_eq!(f.prop("/chosen", "nosuch"), None);
        assert_eq!(f.prop("/cpus/cpu@1", "reg"), Some(&[0, 0, 0, 1][..]));
        let mut mem = vec![];
        f.for_each_memory(|b, s| mem.push((b, s))).unwrap();
        assert_eq!(mem, vec![(0x4000_0000, 0x2000_0000)]);
        let mut cpus = vec![];
        f.for_each_cpu(|m| cpus.push(m)).unwrap();
        assert_eq!(cpus, vec![0, 1]);
    }

    #[test]
    fn root_children_by_compatible() {
        let mut b = Builder::new();
        b.begin("")
            .prop("#address-cells", &cells(&[2]))
            .prop("#size-cells", &cells(&[2]));
        for base in [0x0a00_0000u32, 0x0a00_0200] {
            b.begin(&format!("virtio_mmio@{base:x}"))
                .prop("dma-coherent", b"")
                .prop("reg", &cells(&[0, base, 0, 0x200]))
                .prop("compatible", b"virtio,mmio\0");
            // A grandchild with the same compatible is not a root child.
            b.begin("inner")
                .prop("compatible", b"virtio,mmio\0")
                .prop("reg", &cells(&[0, 1, 0, 1]))
                .end();
            b.end();
        }
        b.begin("pcie@10000000")
            .prop("compatible", b"pci-host-ecam-generic\0")
            .prop("reg", &cells(&[0x40, 0x1000_0000, 0, 0x1000_0000]))
            .prop(
                "ranges",
                &cells(&[0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2eff_0000]),
            )
            .end();
        b.begin("other")
            .prop("compatible", b"arm,pl011\0arm,primecell\0")
            .end();
        b.end();
        let d = b.build(&[]);
        let f = Fdt::new(&d).unwrap();
        let mut seen = vec![];
        f.for_each_compatible("virtio,mmio", |n| {
            seen.push((n.name.to_vec(), n.reg(0), n.reg(1)))
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (
                    b"virtio_mmio@a000000".to_vec(),
                    Some((0x0a00_0000, 0x200)),
                    None
                ),
                (
                    b"virtio_mmio@a000200".to_vec(),
                    Some((0x0a00_0200, 0x200)),
                    None
                ),
            ]
        );
        let mut pci = vec![];
        f.for_each_compatible("pci-host-ecam-generic", |n| {
            pci.push((n.reg(0), n.ranges.len()))
        })
        .unwrap();
        assert_eq!(pci, vec![(Some((0x40_1000_0000, 0x1000_0000)), 28)]);
        let mut n = 0;
        f.for_each_compatible("arm,primecell", |_| n += 1).unwrap();
        f.for_each_compatible("arm", |_| n += 10).unwrap();
        assert_eq!(n, 1, "one string of the list, whole");
    }

    #[test]
    fn subtract_cases() {
        let h = (0x4020_0000, 0x40_0000);
        assert_eq!(
            subtract(0x4000_0000, 0x800_0000, h),
            [
                Some((0x4000_0000, 0x20_0000)),
                Some((0x4060_0000, 0x7a0_0000))
            ]
        );
        assert_eq!(
            subtract(0x4020_0000, 0x800_0000, h),
            [None, Some((0x4060_0000, 0x7c0_0000))]
        );
        assert_eq!(
            subtract(0x8000_0000, 0x1000, h),
            [Some((0x8000_0000, 0x1000)), None]
        );
        assert_eq!(
            subtract(0x4000_0000, 0x30_0000, h),
            [Some((0x4000_0000, 0x20_0000)), None]
        );
        assert_eq!(subtract(0x4030_0000, 0x1000, h), [None, None]);
    }

    fn edit(d: &[u8], args: &[u8]) -> Vec<u8> {
        let f = Fdt::new(d).unwrap();
        let mut out = vec![0u8; 4096];
        let n = rewrite(
            &f,
            &Edits {
                bootargs: args,
                psci_method: b"hvc",
                hole: (0x4020_0000, 0x40_0000),
                reserve: &[(0x4000_0000, 0x1000)],
            },
            &mut out,
        )
        .unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn rewrite_applies_the_three_edits() {
        for with in [true, false] {
            let d = qemu_like(with);
            let out = edit(&d, b"only=guard:*");
            let f = Fdt::new(&out).unwrap();
            assert_eq!(f.prop_str("/psci", "method"), Some("hvc"));
            assert_eq!(f.prop_str("/psci", "compatible"), Some("arm,psci-1.0"));
            assert_eq!(f.prop_str("/chosen", "bootargs"), Some("only=guard:*"));
            assert_eq!(f.prop_str("/chosen", "stdout-path"), Some("/pl011@9000000"));
            let mut mem = vec![];
            f.for_each_memory(|b, s| mem.push((b, s))).unwrap();
            assert_eq!(
                mem,
                vec![(0x4000_0000, 0x20_0000), (0x4060_0000, 0x1fa0_0000)]
            );
            let mut cpus = vec![];
            f.for_each_cpu(|m| cpus.push(m)).unwrap();
            assert_eq!(cpus, vec![0, 1]);
            // Reservations: the old one, then ours.
            let rsv = be32(&out, 16).unwrap() as usize;
            assert_eq!(be64(&out, rsv).unwrap(), 0x4800_0000);
            assert_eq!(be64(&out, rsv + 16).unwrap(), 0x4000_0000);
            assert_eq!(be64(&out, rsv + 32).unwrap(), 0);
            assert_eq!(total_size(&out).unwrap(), out.len());
            assert_eq!(out.len() % 8, 0);
            // Rewriting again without a new reservation is stable.
            let mut again = vec![0u8; 4096];
            let n = rewrite(
                &f,
                &Edits {
                    bootargs: b"only=guard:*",
                    psci_method: b"hvc",
                    hole: (0x4020_0000, 0x40_0000),
                    reserve: &[],
                },
                &mut again,
            )
            .unwrap();
            assert_eq!(&again[..n], &out[..]);
        }
    }

    #[test]
    fn one_cell_memory_and_missing_chosen() {
        let mut b = Builder::new();
        b.begin("")
            .prop("#address-cells", &cells(&[1]))
            .prop("#size-cells", &cells(&[1]));
        b.begin("memory")
            .prop(
                "reg",
                &cells(&[0x4000_0000, 0x1000_0000, 0x8000_0000, 0x100_0000]),
            )
            .end();
        b.end();
        let d = b.build(&[]);
        let out = edit(&d, b"");
        let f = Fdt::new(&out).unwrap();
        let mut mem = vec![];
        f.for_each_memory(|b, s| mem.push((b, s))).unwrap();
        assert_eq!(
            mem,
            vec![
                (0x4000_0000, 0x20_0000),
                (0x4060_0000, 0xfa0_0000),
                (0x8000_0000, 0x100_0000)
            ]
        );
        assert_eq!(f.prop_str("/chosen", "bootargs"), Some(""));
    }

    #[test]
    fn errors_not_panics() {
        let d = qemu_like(true);
        assert_eq!(Fdt::new(&d[..20]).err(), Some(FdtError::Truncated));
        let mut bad = d.clone();
        bad[0] = 0;
        assert_eq!(Fdt::new(&bad).err(), Some(FdtError::BadMagic));
        let f = Fdt::new(&d).unwrap();
        let mut small = [0u8; 64];
        let e = Edits {
            bootargs: b"",
            psci_method: b"hvc",
            hole: (0, 0),
            reserve: &[],
        };
        assert_eq!(rewrite(&f, &e, &mut small), Err(FdtError::NoSpace));
        // Garbage in the structure block.
        let mut g = d.clone();
        let st = be32(&d, 8).unwrap() as usize;
        g[st..st + 4].copy_from_slice(&7u32.to_be_bytes());
        let f = Fdt::new(&g).unwrap();
        assert_eq!(f.prop("/chosen", "bootargs"), None);
        assert!(f.for_each_memory(|_, _| ()).is_err());
    }
}
