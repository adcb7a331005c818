import XCTest
@testable import KiriLua
import KiriTensor

/// The Lua tensor API (lua-api.md, "Tensors") against references computed independently in Lua's
/// own double-precision arithmetic, element by element. The kernels themselves are checked against
/// numpy in KiriTensorTests; these tests prove the bindings: argument order, 1-based indices,
/// broadcasting from Lua, in-place and result-first forms, metamethods and error text.
final class TensorAPITests: XCTestCase {
    /// Helpers every snippet uses: `near` compares a tensor (or number) with a Lua table (or number).
    let helpers = """
    local function flat(t, out)
        out = out or {}
        if type(t) == "table" then for _, v in ipairs(t) do flat(v, out) end else out[#out + 1] = t end
        return out
    end
    local function near(got, want, tolerance, what)
        tolerance = tolerance or 1e-6
        local g = flat(type(got) == "number" and got or got:totable())
        local w = flat(want)
        assert(#g == #w, (what or "") .. ": " .. #g .. " values, expected " .. #w)
        for i = 1, #g do
            local scale = math.max(1, math.abs(w[i]))
            if not (math.abs(g[i] - w[i]) <= tolerance * scale or (g[i] ~= g[i] and w[i] ~= w[i])) then
                error(string.format("%s: element %d is %.9g, expected %.9g", what or "", i, g[i], w[i]), 2)
            end
        end
    end
    local function map(values, f) local out = {} for i, v in ipairs(values) do out[i] = f(v, i) end return out end
    local function f32(x) return string.unpack("f", string.pack("f", x)) end

    """

    func check(_ body: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(runLua(helpers + body + "\nprint('ok')", file: file, line: line), "ok\n", file: file, line: line)
    }

    func testLuaAPIExamples() {
        check("""
        local t = kiri.tensor({ {1, 2}, {3, 4} })
        near(t, {1, 2, 3, 4}, 0, "tensor")
        local shape = t:shape()
        assert(#shape == 2 and shape[1] == 2 and shape[2] == 2)
        assert(t:numel() == 4 and #t == 2 and t:dim() == 2)
        assert(t:totable()[2][1] == 3)
        near(kiri.zeros({2, 3}), {0, 0, 0, 0, 0, 0}, 0, "zeros")
        near(kiri.ones({2, 3}), {1, 1, 1, 1, 1, 1}, 0, "ones")
        near(kiri.full({2, 3}, 0.5), {0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, 0, "full")
        near(kiri.linspace(0, 1, 5), {0, 0.25, 0.5, 0.75, 1}, 0, "linspace")
        near(kiri.arange(4), {0, 1, 2, 3}, 0, "arange")
        near(kiri.arange(1, 2, 0.25), {1, 1.25, 1.5, 1.75}, 0, "arange step")
        local v = kiri.tensor({10, 20, 30})
        assert(v[1] == 10 and v[3] == 30)
        assert(kiri.tensor({{7}}):item() == 7)
        assert(kiri.tensor(2.5):dim() == 0 and kiri.tensor(2.5):item() == 2.5)
        """)
    }

    func testArithmeticWithNumbersOnEitherSideAndBroadcasting() {
        check("""
        local a, b = {1, -2, 3.5, 4}, {0.5, 2, -1, 8}
        local ta, tb = kiri.tensor(a):reshape(2, 2), kiri.tensor(b):reshape(2, 2)
        near(ta + tb, map(a, function(x, i) return x + b[i] end), 0, "+")
        near(ta - tb, map(a, function(x, i) return x - b[i] end), 0, "-")
        near(ta * tb, map(a, function(x, i) return x * b[i] end), 0, "*")
        near(ta / tb, map(a, function(x, i) return x / b[i] end), 1e-7, "/")
        near(ta ^ 2, map(a, function(x) return x ^ 2 end), 1e-7, "^")
        near(-ta, map(a, function(x) return -x end), 0, "unary -")
        near(2 - ta, map(a, function(x) return 2 - x end), 0, "number - t")
        near(1 / tb, map(b, function(x) return 1 / x end), 1e-7, "number / t")
        near(3 * ta, map(a, function(x) return 3 * x end), 0, "number * t")
        near(ta + 1, map(a, function(x) return x + 1 end), 0, "t + number")
        -- numpy broadcasting: [2,1,3] with [4,1] gives [2,4,3]
        local p = kiri.arange(6):reshape(2, 1, 3)
        local q = kiri.arange(4):reshape(4, 1) * 10
        local r = p + q
        local s = r:shape()
        assert(s[1] == 2 and s[2] == 4 and s[3] == 3)
        local want = {}
        for i = 0, 1 do for j = 0, 3 do for k = 0, 2 do want[#want + 1] = (i * 3 + k) + j * 10 end end end
        near(r, want, 0, "broadcast")
        near(kiri.add(ta, tb), (ta + tb):totable(), 0, "kiri.add")
        near(ta:sub(tb), (ta - tb):totable(), 0, ":sub")
        near(kiri.maximum(ta, tb), map(a, function(x, i) return math.max(x, b[i]) end), 0, "maximum")
        near(kiri.gt(ta, tb), map(a, function(x, i) return x > b[i] and 1 or 0 end), 0, "gt")
        """)
    }

    func testUnaryFunctionsAgainstLuaMath() {
        check("""
        local xs = {0.25, 0.5, 1, 2, 3.75}
        local t = kiri.tensor(xs)
        local function sigmoid(x) return 1 / (1 + math.exp(-x)) end
        local cases = {
            sqrt = math.sqrt, exp = math.exp, log = function(x) return math.log(x) end, abs = math.abs, neg = function(x) return -x end,
            sigmoid = sigmoid, silu = function(x) return x * sigmoid(x) end,
            tanh = function(x) return (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1) end,
            square = function(x) return x * x end, reciprocal = function(x) return 1 / x end,
            floor = math.floor, ceil = math.ceil,
        }
        for name, f in pairs(cases) do
            near(t[name](t), map(xs, f), 2e-7, name)
            near(kiri[name](t), map(xs, f), 2e-7, "kiri." .. name)
            local u = t:clone()
            assert(rawequal(u[name .. "_"](u), u), name .. "_ returns self")
            near(u, map(xs, f), 2e-7, name .. "_")
        end
        near(kiri.tensor({-3, 0, 2}):sign(), {-1, 0, 1}, 0, "sign")
        near(kiri.tensor({0.5, 1.5, 2.5, -0.5}):round(), {0, 2, 2, -0}, 0, "round half to even")
        near(t:clamp(0.5, 2), map(xs, function(x) return math.min(2, math.max(0.5, x)) end), 0, "clamp")
        near(t:clamp(nil, 1), map(xs, function(x) return math.min(1, x) end), 0, "clamp high only")
        local e = kiri.tensor({10, 20, 30, 40, 50})
        near(kiri.lerp(t, e, 0.25), map(xs, function(x, i) return x + 0.25 * (e[i] - x) end), 1e-6, "lerp")
        local w = kiri.tensor({0, 0.5, 1, 0.5, 0})
        near(t:lerp(e, w), map(xs, function(x, i) return x + w[i] * (e[i] - x) end), 1e-6, "lerp tensor weight")
        local c = kiri.tensor({1, 0, 1, 0, 1})
        near(kiri.where(c, t, e), {0.25, 20, 1, 40, 3.75}, 0, "where")
        """)
    }

    func testReductionsAgainstLuaLoops() {
        check("""
        local rows = {{1, 2, 3}, {4, 5, 6.5}}
        local t = kiri.tensor(rows)
        local all = {1, 2, 3, 4, 5, 6.5}
        local sum = 0 for _, v in ipairs(all) do sum = sum + v end
        local mean = sum / #all
        local ss = 0 for _, v in ipairs(all) do ss = ss + (v - mean) ^ 2 end
        near(t:sum(), sum, 1e-7, "sum")
        near(t:mean(), mean, 1e-7, "mean")
        near(t:var(), ss / (#all - 1), 1e-6, "var unbiased")
        near(t:std(), math.sqrt(ss / (#all - 1)), 1e-6, "std unbiased")
        near(t:var(nil, false), ss / #all, 1e-6, "var biased")
        near(t:min(), 1, 0, "min")
        near(t:max(), 6.5, 0, "max")
        near(t:norm(), math.sqrt(1 + 4 + 9 + 16 + 25 + 6.5 ^ 2), 1e-6, "norm")
        near(t:norm(1), sum, 1e-6, "norm 1")
        near(t:norm(math.huge), 6.5, 0, "norm inf")
        near(t:sum(1), {5, 7, 9.5}, 0, "sum dim 1")
        near(t:sum(2), {6, 15.5}, 0, "sum dim 2")
        near(t:sum(-1), {6, 15.5}, 0, "sum dim -1")
        local kept = t:sum(2, true):shape()
        assert(#kept == 2 and kept[1] == 2 and kept[2] == 1, "keepdim")
        near(t:mean(1), {2.5, 3.5, 4.75}, 0, "mean dim 1")
        near(t:max(2), {3, 6.5}, 0, "max dim 2")
        near(t:std(1), {math.sqrt(4.5), math.sqrt(4.5), math.sqrt(6.125)}, 1e-6, "std dim 1")
        near(kiri.tensor({{3, 9, 1}, {7, 2, 8}}):argmax(2), {2, 3}, 0, "argmax is 1-based")
        """)
    }

    func testMatmulAgainstLuaLoops() {
        check("""
        local a = kiri.arange(6):reshape(2, 3)
        local b = kiri.arange(12):reshape(3, 4) - 5
        local want = {}
        for i = 0, 1 do for j = 0, 3 do
            local s = 0
            for k = 0, 2 do s = s + (i * 3 + k) * ((k * 4 + j) - 5) end
            want[#want + 1] = s
        end end
        near(a:matmul(b), want, 0, "matmul")
        local out = kiri.zeros(2, 4)
        assert(rawequal(kiri.matmul(out, a, b), out), "result-first returns the result tensor")
        near(out, want, 0, "matmul into")
        near(kiri.tensor({1, 2, 3}):matmul(kiri.tensor({4, 5, 6})), {32}, 0, "dot")
        """)
    }

    func testShapeOperationsUseOneBasedIndices() {
        check("""
        local t = kiri.arange(24):reshape(2, 3, 4)
        local function at(i, j, k) return (i - 1) * 12 + (j - 1) * 4 + (k - 1) end
        local s = t:permute(3, 1, 2)
        local ps = s:shape()
        assert(ps[1] == 4 and ps[2] == 2 and ps[3] == 3)
        assert(s:totable()[4][2][3] == at(2, 3, 4), "permute")
        assert(t:transpose(1, 3):totable()[4][3][2] == at(2, 3, 4), "transpose")
        local n = t:narrow(3, 2, 2)                        -- columns 2..3
        assert(n:shape()[3] == 2 and n:totable()[2][3][1] == at(2, 3, 2), "narrow")
        local sel = t:select(2, 3)                         -- the third row of each matrix
        assert(sel:dim() == 2 and sel:totable()[2][4] == at(2, 3, 4), "select")
        assert(t[2]:totable()[3][4] == at(2, 3, 4), "t[i] gives a sub-tensor")
        local c = kiri.cat({kiri.zeros(1, 2), kiri.ones(2, 2)}, 1)
        near(c, {0, 0, 1, 1, 1, 1}, 0, "cat")
        local st = kiri.stack({kiri.zeros(2), kiri.ones(2)}, 2)
        near(st, {0, 1, 0, 1}, 0, "stack dim 2")
        near(kiri.tensor({1, 2}):reshape(2, 1):expand(2, 3), {1, 1, 1, 2, 2, 2}, 0, "expand")
        near(kiri.tensor({1, 2}):repeatTensor(2, 2), {1, 2, 1, 2, 1, 2, 1, 2}, 0, "repeatTensor")
        assert(kiri.zeros(2, 1, 3):squeeze():dim() == 2 and kiri.zeros(3):unsqueeze(1):shape()[1] == 1)
        assert(t:view(-1, 4):shape()[1] == 6, "reshape with -1")
        assert(t:size(3) == 4 and t:size(-1) == 4)
        -- reshape shares storage (torch.view); clone does not
        local flat = t:reshape(24)
        flat:fill_(1)
        assert(t:sum() == 24, "reshape is a view")
        local copy = t:clone()
        copy:zero_()
        assert(t:sum() == 24, "clone is a copy")
        """)
    }

    func testInPlaceFormsReturnSelfAndResultFirstFormsReuseMemory() {
        check("""
        local x = kiri.tensor({1, 2, 3})
        local d = kiri.tensor({10, 20, 30})
        assert(rawequal(x:axpy_(0.5, d), x))
        near(x, {6, 12, 18}, 0, "axpy_")
        assert(rawequal(x:add_(1), x)) near(x, {7, 13, 19}, 0, "add_ number")
        assert(rawequal(x:mul_(d), x)) near(x, {70, 260, 570}, 0, "mul_ tensor")
        assert(rawequal(x:copy_(d), x)) near(x, {10, 20, 30}, 0, "copy_")
        assert(rawequal(x:fill_(2), x)) near(x, {2, 2, 2}, 0, "fill_")
        assert(rawequal(x:clamp_(0, 1), x)) near(x, {1, 1, 1}, 0, "clamp_")
        local out = kiri.zeros(3)
        assert(rawequal(kiri.add(out, x, d), out)) near(out, {11, 21, 31}, 0, "add into")
        assert(rawequal(kiri.exp(out, kiri.zeros(3)), out)) near(out, {1, 1, 1}, 0, "exp into")
        kiri.add(x, x, d) near(x, {11, 21, 31}, 0, "aliased result")
        local m = kiri.zeros(2, 3)
        m:add_(kiri.tensor({1, 2, 3}))                      -- broadcast into self
        near(m, {1, 2, 3, 1, 2, 3}, 0, "add_ broadcast")
        local v = kiri.zeros(3)
        v[2] = 5
        near(v, {0, 5, 0}, 0, "newindex")
        """)
    }

    func testRandomNumbersAreSeeded() {
        let output = runLua("""
        local a, b, c = kiri.randn({1000}, 7), kiri.randn({1000}, 7), kiri.randn({1000}, 8)
        print((a - b):abs():max(), (a - c):abs():max(), a:mean(), a:std())
        local u = kiri.rand({4000}, 3)
        print(u:min(), u:max(), u:mean())
        """)
        let numbers = printedNumbers(output)
        XCTAssertEqual(numbers.count, 7)
        XCTAssertEqual(numbers[0], 0, "same seed, same numbers")
        XCTAssertGreaterThan(numbers[1], 0.5, "another seed, other numbers")
        XCTAssertEqual(numbers[2], 0, accuracy: 5 / sqrt(1000.0), "N(0,1) mean within 5 standard errors")
        XCTAssertEqual(numbers[3], 1, accuracy: 0.15)
        XCTAssertGreaterThanOrEqual(numbers[4], 0)
        XCTAssertLessThan(numbers[5], 1)
        XCTAssertEqual(numbers[6], 0.5, accuracy: 5 * sqrt(1 / 12.0 / 4000))
        // The same numbers as the tensor core's Philox stream, so Lua and Swift agree.
        let seven = try! Tensor.randn([1000], seed: 7)
        XCTAssertEqual(printedNumbers(runLua("print(kiri.randn({1000}, 7)[1000])"))[0], Double(seven.values[999]), accuracy: 1e-6)
    }

    /// Large tensors are filled on every core; the numbers must not depend on that.
    func testLargeRandomTensorsMatchTheSingleThreadedStream() throws {
        let count = 1 << 17
        let single = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { single.deallocate() }
        for (make, fill) in [(Tensor.randn, Philox.fillNormal), (Tensor.rand, Philox.fillUniform)] {
            let tensor = try make([count], 11)
            fill(single, count, 11, 1)
            XCTAssertEqual(tensor.values, Array(UnsafeBufferPointer(start: single, count: count)))
        }
    }

    func testArgumentErrorsReadLikeLauxlib() {
        let cases: [(String, String)] = [
            ("kiri.add(kiri.zeros(2), nil)", "bad argument #2 to 'add' (Tensor expected, got nil)"),
            ("local t = kiri.zeros(2); t:axpy_(0.5, 'x')", "bad argument #2 to 'axpy_' (Tensor expected, got string)"),
            ("return kiri.zeros(2, 3) + kiri.zeros(4)", "bad argument #2 to 'add' (shapes [2, 3] and [4] cannot be broadcast)"),
            ("kiri.zeros(2, 3):reshape(4)", "cannot reshape [2, 3] (6 elements) to [4] (4 elements)"),
            ("local t = kiri.zeros(3); return t[4]", "index 4 out of range 1..3"),
            ("kiri.zeros(2, 3):select(3, 1)", "dimension"),
            ("kiri.zeros(2):sum(0)", "bad argument #1 to 'sum' (dimension 0 out of range for a rank-1 tensor (dimensions count from 1"),
            ("kiri.zeros(2, 3):sum(3)", "dimension 3 out of range for a rank-2 tensor"),
            ("kiri.randn({2}, 0/0)", "bad argument #2 to 'randn' (number has no integer representation)"),
            ("kiri.zeros(-1)", "bad argument #1 to 'zeros' (size must be non-negative, got -1)"),
            // The sandbox's wrappers around library functions report the script's line too.
            ("local s = ('x'):rep({})", "bad argument #2 to 'string.rep' (number expected, got table)"),
            ("local s = ('x'):find({})", "bad argument #2 to 'string.find' (string expected, got table)"),
            ("table.insert(nil, 1)", "bad argument #1 to 'table.insert' (table expected, got nil)"),
            ("local u = kiri.zeros(2); do local v <close> = u end; return u + 1",
             "closed Tensor"),
        ]
        for (source, expected) in cases {
            guard let failure = luaError(source) else { XCTFail("no error from: \(source)"); continue }
            XCTAssertTrue(failure.message.contains(expected), "\(source)\n  gave: \(failure.message)\n  expected: \(expected)")
            XCTAssertTrue(failure.message.hasPrefix("test.lua:1:"), "position first: \(failure.message)")
        }
    }

    /// A sampler's loop allocates a tensor per step; Lua's collector must see those bytes and keep up,
    /// so the peak stays flat however many steps run (issue 2, item 3).
    func testTensorMemoryStaysFlatOverTenThousandSteps() throws {
        func peak(steps: Int) throws -> Int {
            let runtime = try LuaRuntime(limits: SandboxLimits(timeout: 120, memory: 1 << 30), output: { _ in })
            defer { runtime.close() }
            try runtime.run(source: """
            local x, d = kiri.randn({4, 64, 64}, 1), kiri.randn({4, 64, 64}, 2)
            for i = 1, \(steps) do
                local dt = -1e-4
                x = x + d * dt
            end
            """, name: "loop.lua")
            return runtime.budget.peak
        }
        let short = try peak(steps: 100), long = try peak(steps: 10_000)
        let tensorBytes = 4 * 64 * 64 * 4
        XCTAssertLessThan(long, 64 * tensorBytes, "peak \(long) bytes: the collector is not keeping up")
        XCTAssertLessThan(Double(long), Double(short) * 1.5 + Double(8 * tensorBytes),
                          "peak grows with the step count: \(short) after 100 steps, \(long) after 10,000")
    }

    /// Errors raised for a Swift callback unwind through C only: 100,000 of them leave no memory behind.
    func testErrorsFromSwiftCallbacksLeakNothing() throws {
        /// Resident bytes; a leak of the ~400,000 tensors and messages made below would be tens of MB.
        func heapInUse() -> Int {
            let fields = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ") ?? []
            return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
        }
        let source = """
        local t = kiri.zeros(64)
        for i = 1, N do
            assert(not pcall(kiri.add, t, nil))
            assert(not pcall(kiri.zeros, {-1}))
            assert(not pcall(t.reshape, t, 3))
            assert(not pcall(kiri.cat, {t, "x"}))
        end
        """
        func runOnce(_ n: Int) throws -> Int {
            let runtime = try LuaRuntime(output: { _ in })
            try runtime.run(source: source.replacingOccurrences(of: "N", with: "\(n)"), name: "errors.lua")
            runtime.close()
            XCTAssertEqual(runtime.budget.used, 0, "everything the run allocated is returned")
            return heapInUse()
        }
        _ = try runOnce(1000)                       // warm up caches and lazily made globals
        let before = heapInUse()
        let after = try runOnce(100_000)
        XCTAssertLessThan(after - before, 8 << 20, "resident memory grew by \(after - before) bytes")
    }
}
