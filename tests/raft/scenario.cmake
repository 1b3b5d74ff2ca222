# Owned by R3: the linearizability checker (kvlinz), its unit tests, and the
# script-driven Raft scenarios (raft-scenario + testdata/*.txt).

# kvlinz: linearizability checker (tests/raft/linz.h), linked by the simulator.
add_library(kvlinz STATIC ${CMAKE_CURRENT_SOURCE_DIR}/linz.c)
target_include_directories(kvlinz PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(kvlinz PUBLIC kvcommon)

kv_unit_test(test_linz SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_linz.c LIBS kvlinz)
