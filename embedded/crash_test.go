package embedded_test
const crashChildEnv = "HERALD_CRASH_CHILD"
func crashChild() int { return 0 }
