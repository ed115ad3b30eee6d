"""``python -m tapegrad``: the seeds' examples, their gradients, and one Wengert listing."""

from __future__ import annotations

import tapegrad as tg


def main() -> None:
    print("tapegrad demo: the examples of the backprop notes, recorded on a Wengert tape\n")

    print("1. c = a**2 + sqrt(b) at a=1, b=2")
    a = tg.tensor(1.0, requires_grad=True)
    b = tg.tensor(2.0, requires_grad=True)
    c = a**2 + b**0.5
    c.backward()
    print(f"   {a.grad=}, {b.grad=}\n")

    print("2. chain rule: z = x*y, w = z**2 at x=2, y=3 (z keeps its grad)")
    x = tg.tensor(2.0, requires_grad=True)
    y = tg.tensor(3.0, requires_grad=True)
    z = x * y
    z.retain_grad()
    w = z**2
    w.backward()
    print(f"   {x.grad=}, {y.grad=}, {z.grad=}\n")

    print("3. w = 2 * (x**3 + x) at x=2: dw/dx = 2 * (3x**2 + 1) = 26")
    x = tg.tensor(2.0, requires_grad=True)
    w = 2 * (x**3 + x)
    print(f"   tg.autograd.grad(w, x) = {tg.autograd.grad(w, x)}\n")

    print("4. the lecture's graph: c = a + b, d = log(a) * log(b), e = c * d at a=2, b=4")
    a = tg.tensor(2.0, requires_grad=True)
    b = tg.tensor(4.0, requires_grad=True)
    e = (a + b) * (tg.log(a) * tg.log(b))
    e.backward(retain_graph=True)
    print(f"   a.grad={a.grad}, b.grad={b.grad}")
    print("   the tape, forward values and backward adjoints:")
    for line in e.tape.listing().splitlines():
        print("     " + line)
    print()

    print("5. micrograd's Value: y = x**2 + 2*x + 1 at x=3")
    v = tg.Value(3.0)
    out = v**2 + 2 * v + 1
    out.backward()
    print(f"   x: {v.data}, y: {out.data}, dy/dx: {v.grad}\n")

    print("6. a linear model's squared loss: loss = (w*x - y)**2 at x=1, y=2, w=1")
    w = tg.tensor(1.0, requires_grad=True)
    loss = (w * 1.0 - 2.0) ** 2
    loss.backward()
    print(f"   loss={loss}, w.grad={w.grad}")


if __name__ == "__main__":
    main()
