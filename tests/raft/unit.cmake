# Unit tests of the Raft core (Check), driven by hand through tc.c, a tiny
# in-test cluster. Owned by the raft core's author.
set(KV_RAFT_TC ${CMAKE_CURRENT_LIST_DIR}/unit/tc.c)
foreach(t test_raft_election test_raft_repl test_raft_read test_raft_snap test_raft_conf
    test_raft_hostile)
  kv_unit_test(${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/${t}.c ${KV_RAFT_TC} LIBS kvraft)
  target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_LIST_DIR}/unit)
endforeach()

# raft-perf: core throughput, a program with a fixed workload; not a test.
add_executable(raft-perf ${CMAKE_CURRENT_LIST_DIR}/unit/raft_perf.c)
target_link_libraries(raft-perf PRIVATE kvraft)

# Seeded random and mutated messages into one node (hostile.c, shared with
# the RaftBatch fuzz target in tests/fuzz).
kv_unit_test(test_raft_hostile_random
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_raft_hostile_random.c ${CMAKE_CURRENT_LIST_DIR}/unit/hostile.c
  LIBS kvraft)
target_include_directories(test_raft_hostile_random PRIVATE ${CMAKE_CURRENT_LIST_DIR}/unit)
