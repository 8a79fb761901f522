// lua-check evaluates an Argo CD resource health script (Lua) in gopher-lua, the interpreter
// Argo CD embeds, against sample objects and compares the result with what each sample expects.
//
//	lua-check SCRIPT.lua TESTDATA_DIR
//
// Every TESTDATA_DIR/*.json holds
//
//	{"expect": {"status": "Healthy", "message": "exact text", "messageContains": "part"},
//	 "object": { ... the resource as the API server returns it ... }}
//
// The object reaches the script as the global `obj`, converted the way Argo CD converts
// unstructured objects (maps and arrays become tables, numbers become Lua numbers), and only
// the libraries Argo CD opens are available (base, table, string, math, package; no os/io).
// The script must return a table whose `status` is one of Argo CD's health codes.
// Exit status 0 when every sample matches, 1 otherwise (each failure is printed).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

type expectation struct {
	Status          string  `json:"status"`
	Message         *string `json:"message"`
	MessageContains string  `json:"messageContains"`
}

type sample struct {
	Expect expectation `json:"expect"`
	Object any         `json:"object"`
}

var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return lua.LString(x.String())
		}
		return lua.LNumber(f)
	case float64:
		return lua.LNumber(x)
	case []any:
		t := L.NewTable()
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.NewTable()
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.RawSetString(k, toLua(L, x[k]))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(x))
	}
}

func newState() *lua.LState {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	return L
}

// evaluate runs the script with `obj` set and returns (status, message).
func evaluate(script string, obj any) (string, string, error) {
	L := newState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	status := lua.LVAsString(ret.RawGetString("status"))
	message := lua.LVAsString(ret.RawGetString("message"))
	if !healthCodes[status] {
		return status, message, fmt.Errorf("status %q is not an Argo CD health code", status)
	}
	return status, message, nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: lua-check SCRIPT.lua TESTDATA_DIR")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	files, _ := filepath.Glob(filepath.Join(os.Args[2], "*.json"))
	if len(files) == 0 {
		fmt.Fprintf(os.Stderr, "no samples (*.json) in %s\n", os.Args[2])
		os.Exit(2)
	}
	sort.Strings(files)
	failed := 0
	for _, f := range files {
		name := filepath.Base(f)
		raw, err := os.ReadFile(f)
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", name, err)
			failed++
			continue
		}
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		var s sample
		if err := dec.Decode(&s); err != nil || s.Expect.Status == "" || s.Object == nil {
			fmt.Printf("FAIL %s: not a sample (expect.status and object required): %v\n", name, err)
			failed++
			continue
		}
		status, message, err := evaluate(string(script), s.Object)
		switch {
		case err != nil:
			fmt.Printf("FAIL %s: %v\n", name, err)
		case status != s.Expect.Status:
			fmt.Printf("FAIL %s: status %s, want %s (message %q)\n", name, status, s.Expect.Status, message)
		case s.Expect.Message != nil && message != *s.Expect.Message:
			fmt.Printf("FAIL %s: message %q, want %q\n", name, message, *s.Expect.Message)
		case !strings.Contains(message, s.Expect.MessageContains):
			fmt.Printf("FAIL %s: message %q does not contain %q\n", name, message, s.Expect.MessageContains)
		default:
			fmt.Printf("ok   %s: %s: %s\n", name, status, message)
			continue
		}
		failed++
	}
	fmt.Printf("%d samples, %d failed\n", len(files), failed)
	if failed > 0 {
		os.Exit(1)
	}
}
