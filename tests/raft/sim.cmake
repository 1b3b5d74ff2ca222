# Owned by R2: raft-sim, the randomized deterministic simulator of src/raft
# and src/node (tests/raft/sim/): each simulated node runs kvd's Ready loop
# (kvnode) over the simulator's half of node_io. Every run prints its seed; a
# failure prints a one-line replay command.
if(TARGET kvraft AND TARGET kvnode)
  add_executable(raft-sim
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_main.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_run.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_node.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_io.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_disk.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_net.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_client.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_nemesis.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_check.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_hist.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_sm.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_queue.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_rand.c
    ${CMAKE_CURRENT_SOURCE_DIR}/sim/sim_bench.c)
  target_include_directories(raft-sim PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/sim)
  target_link_libraries(raft-sim PRIVATE kvnode kvraft kvcommon)
  # The linearizability checker (kvlinz) is defined in scenario.cmake, which
  # tests/raft/CMakeLists.txt includes after this file: link it by name.
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/scenario.cmake AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/linz.c)
    target_link_libraries(raft-sim PRIVATE kvlinz)
    target_compile_definitions(raft-sim PRIVATE SIM_HAVE_LINZ=1)
  endif()
endif()

# ---- ctest ---------------------------------------------------------------
# Seeds and steps: 2 x 1000 seeds at 40,000 events each take about a minute
# of CPU apiece in the release build (2 cores: run together well under the
# 4-minute budget). Labels "sim".
if(TARGET raft-sim)
  add_test(NAME raft_sim_3 COMMAND raft-sim --seeds 1000 --nodes 3 --steps 40000)
  add_test(NAME raft_sim_5 COMMAND raft-sim --seeds 1000 --nodes 5 --steps 40000)
  set_tests_properties(raft_sim_3 raft_sim_5 PROPERTIES LABELS sim TIMEOUT 900
    PASS_REGULAR_EXPRESSION "seeds=1000 failures=0 elections=[0-9]+ commits=[0-9]+ snapshots=[0-9]+ membership_changes=[0-9]+\n$")
  # A short run labelled "unit" so the ASan+UBSan build also drives the core
  # through crashes, partitions, snapshots and membership changes (seeds the
  # release runs above do not use).
  add_test(NAME raft_sim_sanitized COMMAND raft-sim --seeds 40 --first-seed 900000 --nodes 5 --steps 20000)
  set_tests_properties(raft_sim_sanitized PROPERTIES LABELS unit TIMEOUT 600
    PASS_REGULAR_EXPRESSION "seeds=40 failures=0 elections=[0-9]+ commits=[0-9]+ snapshots=[0-9]+ membership_changes=[0-9]+\n$")

  # A wrapper that runs raft-sim and checks its exit status and output:
  # -DEXPECT_RC=<n> -DEXPECT_RE=<regex> -DARGS=<|-separated list>, and -DSAME_TWICE=1 to
  # require byte-identical output from two runs (determinism).
  set(KV_SIM_EXPECT ${CMAKE_CURRENT_BINARY_DIR}/sim_expect.cmake)
  file(WRITE ${KV_SIM_EXPECT} [=[
string(REPLACE "|" ";" ARGS "${ARGS}")
execute_process(COMMAND ${SIM} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(SAME_TWICE)
  execute_process(COMMAND ${SIM} ${ARGS} RESULT_VARIABLE rc2 OUTPUT_VARIABLE out2)
  string(LENGTH "${out}" n)
  if(NOT out STREQUAL out2 OR n LESS 10000)
    message(FATAL_ERROR "two runs of ${ARGS} differ (or the trace is short: ${n} bytes)")
  endif()
endif()
if(NOT rc EQUAL EXPECT_RC)
  message(FATAL_ERROR "raft-sim ${ARGS}: exit ${rc}, expected ${EXPECT_RC}\n${out}${err}")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT_RE}")
  message(FATAL_ERROR "raft-sim ${ARGS}: output does not match ${EXPECT_RE}\n${out}${err}")
endif()
message(STATUS "raft-sim ${ARGS}: exit ${rc} as expected")
]=])
  function(kv_sim_expect name rc re)
    string(REPLACE ";" "|" args "${ARGN}")
    add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} -DSIM=$<TARGET_FILE:raft-sim>
      "-DARGS=${args}" -DEXPECT_RC=${rc} "-DEXPECT_RE=${re}" -P ${KV_SIM_EXPECT})
    set_tests_properties(${name} PROPERTIES LABELS sim TIMEOUT 600)
  endfunction()

  # Controls: a deliberately broken fake disk (acknowledges writes before they
  # are durable, loses them at a crash) and a leader that serves reads
  # without ReadIndex. The checker must catch each: exit 1, naming the seed
  # and the invariant.
  kv_sim_expect(raft_sim_control_unsafe_disk 1
    "FAIL seed=[0-9]+ nodes=3 invariant=[a-z-]+ .*replay: raft-sim --seed [0-9]+ .*--control unsafe-disk.*seeds=1000 failures=[1-9]"
    --control unsafe-disk --seeds 1000)
  kv_sim_expect(raft_sim_control_stale_reads 1
    "FAIL seed=[0-9]+ nodes=3 invariant=linearizability .*seeds=200 failures=[1-9]"
    --control stale-reads --seeds 200)
  # Determinism: one seed, traced twice, byte for byte.
  add_test(NAME raft_sim_deterministic COMMAND ${CMAKE_COMMAND} -DSIM=$<TARGET_FILE:raft-sim>
    "-DARGS=--seed|42|--nodes|5|--steps|20000|--trace" -DSAME_TWICE=1 -DEXPECT_RC=0
    "-DEXPECT_RE=seeds=1 failures=0" -P ${KV_SIM_EXPECT})
  set_tests_properties(raft_sim_deterministic PROPERTIES LABELS sim TIMEOUT 300)
  # Flags: a bad value exits 2 and names the flag.
  kv_sim_expect(raft_sim_bad_flag 2 "bad flag --nodes" --seeds 1 --nodes 4)
endif()
