#!/usr/bin/env python3
"""Writes apiserver/src/protobuf/fields.txt: the protobuf field numbers and types of the
Kubernetes API types, read from the prost definitions of the k8s-pb crate (facts of the
wire format; regenerate when the k8s-pb version changes):

    python3 tools/gen-proto-fields.py ~/.cargo/registry/src/*/k8s-pb-0.8.0/src > apiserver/src/protobuf/fields.txt

Lines: `T <schema name>` starts a type; `F <tag> <rust field> <kind> <label> [<type>]`
is one field (kind: string int32 int64 bool double bytes message map_string map_bytes
map_message; label: optional repeated).
"""
import os
import re
import sys

root = sys.argv[1]
out = []
attr_re = re.compile(r'#\[prost\(([^]]*)\)\]')
for dirpath, _, files in sorted(os.walk(root)):
    for f in sorted(files):
        if f != 'mod.rs':
            continue
        path = os.path.join(dirpath, f)
        module = os.path.relpath(dirpath, root).split(os.sep)
        if module == ['.']:
            continue
        text = open(path).read()
        for m in re.finditer(r'pub struct (\w+) \{(.*?)\n\}', text, re.S):
            name, body = m.group(1), m.group(2) + "\n"
            out.append('T io.k8s.' + '.'.join(module) + '.' + name)
            # Each field: an attribute, then `pub name: type,` where the type may span
            # lines and hold commas inside its angle brackets.
            for fm in re.finditer(r'#\[prost\(([^]]*)\)\]\s*pub (r#)?(\w+):\s*', body):
                attrs, field = fm.group(1), fm.group(3)
                end, depth = fm.end(), 0
                while end < len(body) and not (body[end] == ',' and depth == 0):
                    depth += {'<': 1, '>': -1}.get(body[end], 0)
                    end += 1
                rtype = ' '.join(body[fm.end():end].split())
                tag = re.search(r'tag = "(\d+)"', attrs).group(1)
                parts = [p.strip() for p in attrs.split(',')]
                def resolve(t):
                    # A map's message type is its second type argument.
                    for m in ('::prost::alloc::collections::BTreeMap<', '::std::collections::BTreeMap<'):
                        if t.startswith(m):
                            t = t[len(m):].split(',', 1)[1]
                    t = t.replace('::core::option::Option<', '').replace('::prost::alloc::vec::Vec<', '')
                    t = t.replace('::prost::alloc::boxed::Box<', '')
                    t = t.strip().rstrip('>').strip().rstrip(',').strip()
                    segs = t.split('::')
                    mod = list(module)
                    while segs and segs[0] == 'super':
                        mod.pop()
                        segs.pop(0)
                    if len(segs) == 1:
                        return 'io.k8s.' + '.'.join(module + segs)
                    return 'io.k8s.' + '.'.join(mod + segs)
                if parts[0].startswith('btree_map') or parts[0].startswith('map'):
                    value = attrs.split('"')[1].split(',')[1].strip()
                    kind = 'map_' + value
                    extra = ' ' + resolve(rtype) if value == 'message' else ''
                    out.append(f'F {tag} {field} {kind} optional{extra}')
                    continue
                kind = parts[0].split('=')[0].strip()
                label = 'repeated' if 'repeated' in parts else 'optional'
                extra = ' ' + resolve(rtype) if kind == 'message' else ''
                out.append(f'F {tag} {field} {kind} {label}{extra}')
print('\n'.join(out))
