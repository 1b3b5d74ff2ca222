# Owned by R3: the linearizability checker (kvlinz), its unit tests, and the
# script-driven Raft scenarios (raft-scenario + testdata/*.txt).

# kvlinz: linearizability checker (tests/raft/linz.h), linked by the simulator.
add_library(kvlinz STATIC ${CMAKE_CURRENT_SOURCE_DIR}/linz.c)
target_include_directories(kvlinz PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(kvlinz PUBLIC kvcommon)

kv_unit_test(test_linz SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_linz.c LIBS kvlinz)

# raft-scenario: the script interpreter; one ctest per script in testdata/.
if(TARGET kvraft AND TARGET kvnode)
  add_executable(raft-scenario
    ${CMAKE_CURRENT_SOURCE_DIR}/scenario/main.c
    ${CMAKE_CURRENT_SOURCE_DIR}/scenario/script.c
    ${CMAKE_CURRENT_SOURCE_DIR}/scenario/expect.c
    ${CMAKE_CURRENT_SOURCE_DIR}/scenario/harness.c)
  target_link_libraries(raft-scenario PRIVATE kvnode kvraft kvcommon)
  file(GLOB KV_RAFT_SCENARIOS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/testdata/*.txt)
  foreach(script ${KV_RAFT_SCENARIOS})
    get_filename_component(name ${script} NAME_WE)
    add_test(NAME raft_scenario_${name} COMMAND raft-scenario ${script})
    set_tests_properties(raft_scenario_${name} PROPERTIES LABELS unit TIMEOUT 60)
  endforeach()
endif()
