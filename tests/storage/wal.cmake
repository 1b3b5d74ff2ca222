# Unit tests of the WAL, hard state, data dir and fake file layer.
set(KV_WAL_TEST_UTIL ${CMAKE_CURRENT_LIST_DIR}/test_wal_util.c)
foreach(t test_fs_fake test_datadir test_wal test_wal_faults test_hardstate)
  kv_unit_test(${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/${t}.c ${KV_WAL_TEST_UTIL} LIBS kvwal)
endforeach()
kv_unit_test(test_clusterfile SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_clusterfile.c
  ${KV_WAL_TEST_UTIL} LIBS kvwal)
